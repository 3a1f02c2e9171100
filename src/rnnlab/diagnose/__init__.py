"""Seeing inside: how the gradient flows back through time in a model's rnnlab layers.

    from rnnlab.diagnose.measure import measure     # the numbers, on one batch
    from rnnlab.diagnose.verdict import verdict     # vanishing / exploding / healthy, the evidence, the remedies
    from rnnlab.diagnose import report              # PNG figures and one self-contained HTML page

``rnnlab diagnose`` is the command line. (The submodules are not re-exported here: their main functions share their
modules' names.)
"""
