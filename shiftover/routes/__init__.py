"""Route moves (the strangler fig): an application's routes moved one by one from an old upstream
to a new service through a real gateway, as a plan of typed stages with gates and approvals.

spec.py       the ``kind: route`` spec (gateway, upstreams, routes, canary, gates, requires, approvals)
gateway.py    the gateway driver interface (``Gateway``) and the split it reports
haproxy.py    the HAProxy driver: rendered config, a child process, weights over the runtime socket
nginx.py      the nginx driver: rendered config, `nginx -t` and a graceful reload; `mirror` for the dark launch
mirror.py     the comparator endpoint nginx mirrors live safe requests to during the dark launch
drivers.py    `gateway.driver` -> start or attach the gateway
traffic.py    the gateway's access log read from a unix datagram socket: per-side status and latency
compare.py    the Diffy-style comparator: old twice, new once; fields differing between the olds are noise
stages.py     one typed class per route stage, its inverse a weight flip, ``done`` against the audited
              ``RouteState``; plan.py: spec -> plan
asgi.py       the route's flag, and an in-process router reading it

The gates (error rate, p99 latency ratio new/old, mismatch rate) are ``shiftover.checks.routes``; a
route plan is walked by the one evaluator (``shiftover.flows.evaluate``) as a table move's is; the
route stages' runners (work, gates, automatic rollback) are ``shiftover.flows.routes``, its Prefect
flows ``shiftover.flows.route_move``.
"""
