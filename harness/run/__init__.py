"""Running one scenario on one target.

- :mod:`harness.run.session`: the card session (what is selected, the trace, the APDU timing
  record, the PIN values) that every step talks to the card through;
- :mod:`harness.run.expect`: a step's expectations and the failure a broken one raises;
- :mod:`harness.run.runner`: begin, the steps in order (each run by its kind in
  :mod:`harness.steps`), end.
"""
