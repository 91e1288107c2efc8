"""Research tools around the engine: planted attacks, benchmark datasets, detection metrics, the
defended-retraining evaluation and the classic baselines. The engine itself never imports them."""
