"""The gates between stages. Each gate is a plain function ``(Migration, GateSpec) -> GateResult``
registered by name in ``checks.gate.GATES``; ``run_gates`` runs a stage's gates, records
their results in the control store and raises ``GateError`` when a blocking one fails."""
