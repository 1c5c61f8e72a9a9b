"""The web console: pages and JSON over the broker's HTTP listener.

- views: pure view-model builders (plain dicts from plain figures), unit-tested.
- history: small time series kept in memory (lag per group, object-store counters).
- source: the IO edge, on the event loop: the figures, asked over the Kafka protocol
  (through the broker's own client, so any broker gives the cluster-wide view) and
  from this broker's own parts (WAL, catalog, object store).
- html: the view models as HTML; static/: the stylesheet and the script that refreshes
  live figures.
- http: the WSGI app (routes, forms, errors), on the HTTP listener's thread.
"""
