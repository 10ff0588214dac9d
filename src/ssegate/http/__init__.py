"""The HTTP layer: the ASGI response that follows a stream's log (``response``), the routes (``routes/``), caller
identity (``auth``) and the standalone application that ``ssegate serve`` runs (``standalone``)."""
