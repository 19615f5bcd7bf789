"""The browser-facing app proxy (ADR 0012, decisions 5 and 6): a process of its own
(``python -m ai.backend.appproxy [-f appproxy.toml]``) that opens the apps of running sessions (Jupyter, the
web terminal, ...) to the browser of the user the manager allowed.

* The manager hands the browser a one-use token (:mod:`ai.backend.common.app_tokens`); ``GET
  /v2/proxy/auth?token=...`` on the API port turns it into a **circuit** (:mod:`.circuits`): a port of its own
  from ``port-range`` per user x session x app x container port, and a permit cookie for that circuit only
  (:mod:`.permits`).
* Each circuit port reverse-proxies HTTP and WebSockets to the app's published port (:mod:`.forward`) for a
  browser holding the permit.
* Circuits close when the manager says the session ended (``DELETE /v2/sessions/{id}``), when the manager no
  longer reports the session alive, and after an hour without connections (:mod:`.liveness`).
"""
