"""Scale-out through Redis (CONTRACT §6): the mirrored event log (``redis_log``) and the replicas' cooperation
(``replicas``: resume and cancel anywhere, leases, the detach grace across replicas)."""
