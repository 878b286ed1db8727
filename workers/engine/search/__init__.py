"""Auto-compress: a goal (constraints, an objective, a budget) instead of a recipe; a search across the
technique families finds the candidates, their Pareto front and the one that best meets the goal."""
