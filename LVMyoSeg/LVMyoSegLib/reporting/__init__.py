"""Pictures for reports and checks (matplotlib on an Agg canvas, no pyplot state).
"""
