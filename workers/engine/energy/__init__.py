"""The sustainability report: the job's own energy and CO2, inference energy before and after, and payback."""
