"""The HTTP layer: the ASGI response that follows a stream's log (``response``), the answer sent whole at its end
(``whole_answer``), the routes (``routes/``), caller identity (``auth``) and the standalone application that
``ssegate serve`` runs (``standalone``)."""
