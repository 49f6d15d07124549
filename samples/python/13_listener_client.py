# The multiprocessing documentation's Listener/Client example (multiprocessing.connection), with
# the server and the client in one program: the client runs in a child process, and the server
# listens on a port the OS picks instead of 6000. Python's float type object is left out of the
# list sent (a C++ program cannot send a type).
from array import array
from multiprocessing import Process
from multiprocessing.connection import Client, Listener


def client(address):
    with Client(address, authkey=b'secret password') as conn:
        print(conn.recv())                  # => [2.25, None, 'junk']
        print(conn.recv_bytes())            # => b'hello'
        arr = array('i', [0, 0, 0, 0, 0])
        print(conn.recv_bytes_into(arr))    # => 8
        print(arr)                          # => array('i', [42, 1729, 0, 0, 0])


if __name__ == '__main__':
    address = ('127.0.0.1', 0)     # family is deduced to be 'AF_INET'

    with Listener(address, authkey=b'secret password') as listener:
        p = Process(target=client, args=(listener.address,))
        p.start()
        with listener.accept() as conn:
            print('connection accepted from', listener.last_accepted[0], flush=True)
            conn.send([2.25, None, 'junk'])
            conn.send_bytes(b'hello')
            conn.send_bytes(array('i', [42, 1729]))
        p.join()
