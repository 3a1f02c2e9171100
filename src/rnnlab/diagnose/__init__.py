"""Seeing inside: how the gradient flows back through time in a model's rnnlab layers.

    from rnnlab.diagnose.measure import measure               # the numbers, on one batch
    from rnnlab.diagnose.verdict import verdict               # vanishing / exploding / healthy, evidence, remedies
    from rnnlab.diagnose import report                        # PNG figures and one self-contained HTML page
    from rnnlab.diagnose.during import TrainingDiagnostics    # a trainer callback: numbers every N training steps
    from rnnlab.diagnose.hidden import hidden_states          # an LM's hidden states and gates over a text

``rnnlab diagnose`` is the command line. (The submodules are not re-exported here: their main functions share their
modules' names.)
"""
