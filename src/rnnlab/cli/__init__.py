"""rnnlab's command line. ``main.py`` wires the subcommands (one module each) and turns every user error into one
line on stderr with exit code 2; ``options.py`` holds the checked argument types they share."""
