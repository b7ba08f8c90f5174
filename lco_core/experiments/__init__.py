"""Experiments that run the training core many times and report on it (`lco experiment ...`).

`stability`: the small-scale reproduction of the LCO paper's stability claims
(`stability.py` runs it, `analysis.py` turns metrics into numbers, `verdicts.py` judges the
claims from them, `report.py` writes the Markdown report and plots).
"""
