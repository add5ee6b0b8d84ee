import socket


def test_echo_through_pair(make_pair, echo_server):
    pair = make_pair(echo_server.port)
    with socket.create_connection(("127.0.0.1", pair.a_port), timeout=5) as s:
        s.sendall(b"hello world" * 1000)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    assert got == b"hello world" * 1000
    pair.a.wait_log("result=ok")
    print(pair.a.log()); print(pair.b.log())
