"""Route moves (the strangler fig): an application's routes moved one by one from an old upstream
to a new service through a real gateway, as a plan of typed stages with gates and approvals.

spec.py       the ``kind: route`` spec (gateway, upstreams, routes, canary, gates, requires)
gateway.py    the gateway driver interface (``Gateway``) and the split it reports
haproxy.py    the HAProxy driver: rendered config, a child process, weights over the runtime socket
traffic.py    the gateway's access log read from a unix datagram socket: per-side status and latency
compare.py    the Diffy-style comparator: old twice, new once; fields differing between the olds are noise
stages.py     one typed class per route stage, its inverse a weight flip; plan.py: spec -> plan
asgi.py       the route's flag, and an in-process router reading it

The gates (error rate, p99 latency ratio new/old, mismatch rate) are ``shiftover.checks.routes``; the
evaluator that walks a route plan (approvals, work, gates, automatic rollback, progress in the
control store) is ``shiftover.flows.routes``, its Prefect flows ``shiftover.flows.route_move``.
"""
