"""compresso's compression engine: a plain library (no web app, database or task queue).

Entry points: `recipe.Recipe`, `registry.list_techniques`, `pipeline.run_pipeline`, and
`python -m workers.engine run --spec spec.json` for a killable subprocess.
"""
