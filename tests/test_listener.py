"""``ssegate serve``'s listening socket (``http/listener.py``): the connections waiting behind the one uvloop
accepts are accepted in the same turn of the loop, even while the loop is busy."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest

from ssegate.http.listener import AcceptingLoop, new_event_loop, waiting

N = 50


class _Counted(asyncio.Protocol):
    made: list[Any]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _connect_all(port: int) -> list[socket.socket]:
    """N clients connected (the kernel completes the handshakes: they wait in the listening socket's queue)."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(N)]


def test_regression_connections_waiting_together_are_accepted_in_one_turn_of_a_busy_loop() -> None:
    """libuv accepts one connection per turn of the loop: a gateway busy relaying tokens (turns of tens of ms)
    left a burst of new clients in the kernel's queue for one turn each, seconds for some. The listener accepts
    connections waiting behind the one uvloop accepts in the same turn: here 50 clients wait, each turn of the loop
    is made slow on purpose (30 ms of blocking work), and all 50 connections are made within a few turns (uvloop's
    own server: 10 after 10 turns)."""
    loop = new_event_loop()
    assert isinstance(loop, AcceptingLoop)
    made: list[Any] = []
    counted = type("Counted", (_Counted,), {"made": made})
    sock = _listening()
    clients: list[socket.socket] = []

    async def main() -> int:
        server = await loop.create_server(counted, sock=sock, backlog=128)
        assert server.is_serving()
        clients.extend(_connect_all(sock.getsockname()[1]))
        turns = 0
        while len(made) < N and turns < 10:
            time.sleep(0.03)  # a busy turn: the loop's work between two polls
            await asyncio.sleep(0)
            turns += 1
        server.close()
        await server.wait_closed()
        return turns

    try:
        turns = loop.run_until_complete(main())
        assert len(made) == N, f"{len(made)} of {N} connections made after {turns} turns"
        assert {t.get_extra_info("peername") for t in made} == {c.getsockname() for c in clients}
        for t in made:
            assert t.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # as uvloop's own
            t.close()
        loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        for c in clients:
            c.close()
        sock.close()
        loop.close()


def test_waiting_counts_the_connections_in_a_listening_sockets_queue() -> None:
    sock = _listening()
    clients: list[socket.socket] = []
    try:
        assert waiting(sock) == 0
        clients = [socket.create_connection(sock.getsockname()) for _ in range(3)]
        assert waiting(sock) == 3
        sock.accept()[0].close()
        assert waiting(sock) == 2
    finally:
        for c in clients:
            c.close()
        sock.close()


def test_other_servers_are_uvloops_own() -> None:
    """A server made from a host and port is uvloop's, as it is."""
    loop = new_event_loop()
    assert isinstance(loop, AcceptingLoop)

    async def main() -> None:
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        assert server.is_serving()
        server.close()
        await server.wait_closed()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_uvicorns_protocol_factory_is_replaced_by_a_compiled_one_that_makes_the_same_protocol() -> None:
    """``ssegate serve``'s connections get their ``BoundedRequestProtocol`` from ``uvicorn_glue.protocol_factory``
    instead of uvicorn's interpreted ``create_protocol`` closure: made of the same config, server state, lifespan
    state and loop. Any other factory (another protocol class, a plain callable) is left to the caller."""
    from uvicorn import Config, Server

    from ssegate.http.uvicorn_glue import BoundedRequestProtocol, protocol_factory

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover (never called)
        raise AssertionError

    loop = new_event_loop()
    seen: list[Any] = []

    def factories(http: Any) -> Any:
        config = Config(app, http=http, lifespan="off", log_config=None)
        config.load()
        server = Server(config)
        server.lifespan = config.lifespan_class(config)  # (what ``Server._serve`` sets before ``startup``)

        async def record(factory: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(factory)
            raise OSError("recorded")  # the factory is all this test wants

        loop.create_server = record  # type: ignore[method-assign,assignment]
        sock = _listening()
        try:
            loop.run_until_complete(server.startup(sockets=[sock]))
        except OSError as exc:
            assert str(exc) == "recorded"
        finally:
            sock.close()
        return seen.pop(), server

    try:
        uvicorns, server = factories(BoundedRequestProtocol)
        ours = protocol_factory(uvicorns, loop)
        assert ours is not None and ours is not uvicorns
        made, theirs = ours(), uvicorns(_loop=loop)
        assert type(made) is type(theirs) is BoundedRequestProtocol
        for name in ("config", "server_state", "app_state", "loop"):
            assert getattr(made, name) is getattr(theirs, name), name
        assert made.server_state is server.server_state and made.loop is loop

        h11, _ = factories("h11")
        assert protocol_factory(h11, loop) is None  # uvicorn's own protocols: uvicorn's factory
        assert protocol_factory(_Counted, loop) is None
        assert protocol_factory(lambda: _Counted(), loop) is None

        def shaped(extra: bool) -> Any:  # a closure like uvicorn's, but for one more argument
            config, self = server.config, server

            def create_protocol(_loop: Any = None, more: Any = None) -> Any:
                return config, self

            def create_protocol_as_known(_loop: Any = None) -> Any:
                return config, self

            create_protocol_as_known.__code__ = create_protocol_as_known.__code__.replace(co_name="create_protocol")
            return create_protocol if extra else create_protocol_as_known

        assert protocol_factory(shaped(True), loop) is None
        assert protocol_factory(shaped(False), loop) is not None  # (the same shape: made as uvicorn's would be)
    finally:
        loop.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_a_connection_accepted_behind_another_has_its_scopes_addresses(host: str) -> None:
    """The connections the listener accepts itself come with the addresses the accept returned (the client's; the
    server's where the listener is bound to one address), instead of the protocol asking the socket: each request's
    ASGI scope still names its own client and the server's address, on a listener bound to one address and on a
    wildcard (where each connection asks its socket for the server's)."""
    from uvicorn import Config, Server

    from ssegate.http.uvicorn_glue import BoundedRequestProtocol

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = json.dumps({"client": scope["client"], "server": scope["server"]}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    loop = new_event_loop()
    sock = socket.socket()
    sock.bind((host, 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    clients: list[socket.socket] = []

    async def read_all(client: socket.socket) -> bytes:
        data = b""
        while chunk := await loop.sock_recv(client, 65536):
            data += chunk
        return data

    async def main() -> list[bytes]:
        config = Config(app, http=BoundedRequestProtocol, lifespan="off", log_config=None)
        config.load()
        server = Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        # all connect before the loop's next turn: uvloop accepts one, the listener the others
        clients.extend(socket.create_connection(("127.0.0.1", port)) for _ in range(N))
        assert waiting(sock) == N
        for c in clients:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            c.setblocking(False)
        answers = await asyncio.wait_for(asyncio.gather(*(read_all(c) for c in clients)), 30)
        await server.shutdown()
        return answers

    try:
        answers = loop.run_until_complete(main())
        for client, answer in zip(clients, answers, strict=True):
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), answer
            seen = json.loads(body)
            assert tuple(seen["client"]) == client.getsockname()
            assert tuple(seen["server"]) == ("127.0.0.1", port)
    finally:
        for c in clients:
            c.close()
        sock.close()
        loop.close()


def test_an_accepted_connections_coroutine_is_run_to_its_end_without_a_task() -> None:
    """``backlog._Connecting`` steps a coroutine through its one wait and to its return, the loop's own
    ``connect_accepted_socket`` on a real connection too, and a coroutine that fails is ended there (logged), not
    left to raise in the loop's callback."""
    from ssegate.http.backlog import _Connecting

    async def main() -> tuple[list[str], list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        seen: list[str] = []
        made = [loop.create_future(), loop.create_future()]  # (each its own, as connect_accepted_socket's waiter)

        async def connecting(fail: bool) -> str:
            seen.append("started")
            await made[fail]
            seen.append("resumed")
            if fail:
                raise ConnectionResetError("gone")
            return "transport"

        _Connecting(connecting(False)).step()
        _Connecting(connecting(True)).step()
        assert seen == ["started", "started"]
        for waiter in made:
            waiter.set_result(None)

        # the loop's own connect_accepted_socket (uvloop's, on ssegate's loop) on a real connection, to its return
        listener = _listening()
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        accepted.setblocking(False)
        protocol = _Counted()
        protocol.made = []
        returned: list[Any] = []

        async def adopt() -> None:
            returned.append(await loop.connect_accepted_socket(lambda: protocol, accepted))

        _Connecting(adopt()).step()
        for _ in range(3):
            await asyncio.sleep(0)
        assert len(protocol.made) == 1
        assert returned == [(protocol.made[0], protocol)]
        protocol.made[0].close()
        client.close()
        listener.close()
        await asyncio.sleep(0)
        return seen, errors

    for loop_factory in (asyncio.new_event_loop, new_event_loop):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            seen, errors = runner.run(main())
        assert seen == ["started", "started", "resumed", "resumed"]
        assert errors == []
