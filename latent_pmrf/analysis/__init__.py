"""Reading training curves and results tables: convergence speed-ups and PD Pareto fronts."""
