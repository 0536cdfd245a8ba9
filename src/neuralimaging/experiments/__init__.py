"""Wiring and running: NIP pre-training, joint NIP+FAN optimization, sweeps, results, figures and reports."""
