"""The gates between stages. Each gate is a plain function ``(GateContext, GateSpec) -> GateResult``
(``shiftover.checks.context``), named in ``shiftover.checks.registry.GATES``; ``shiftover.checks.gate.run_gates`` runs a
stage's gates, records their results in the control store and raises ``GateError`` when a blocking one fails."""
