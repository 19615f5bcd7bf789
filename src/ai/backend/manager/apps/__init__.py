"""The manager's side of interactive apps (ADR 0012): which apps a kernel offers and how a request picks
one (:mod:`.ports`, :mod:`.options`), starting them through the agent (:mod:`.launch`), the
``tcpproxy``/``httpproxy`` streams' TCP relay (:mod:`.relay`) and the registry of those open streams
(:mod:`.circuits`), and the browser-facing app proxy: its tokens and calls (:mod:`.appproxy`) and closing
everything of a session that ends (:mod:`.endings`)."""
