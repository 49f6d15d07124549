# The multiprocessing documentation's "Using a remote manager" example (Python 3 docs,
# multiprocessing, Managers) in one program: a server process serves a queue on a TCP port
# (get_server().serve_forever()); one client process puts 'hello', another (this one) gets it.
# samples/remote_queue_manager.cpp is its C++ translation. Expected output: "hello".
from multiprocessing import Pipe, Process
from multiprocessing.managers import BaseManager
from queue import Queue

class QueueManager(BaseManager):
    pass

def serve(port_sender):
    queue = Queue()
    QueueManager.register('get_queue', callable=lambda: queue)
    m = QueueManager(address=('127.0.0.1', 0), authkey=b'abracadabra')
    s = m.get_server()
    port_sender.send(s.address[1])  # port 0: the port the server bound
    s.serve_forever()

def put_hello(port):
    QueueManager.register('get_queue')
    m = QueueManager(address=('127.0.0.1', port), authkey=b'abracadabra')
    m.connect()
    queue = m.get_queue()
    queue.put('hello')

if __name__ == '__main__':
    port_receiver, port_sender = Pipe(duplex=False)
    server = Process(target=serve, args=(port_sender,))
    server.start()
    port = port_receiver.recv()
    client = Process(target=put_hello, args=(port,))
    client.start()
    client.join()
    QueueManager.register('get_queue')
    m = QueueManager(address=('127.0.0.1', port), authkey=b'abracadabra')
    m.connect()
    queue = m.get_queue()
    print(queue.get())
    server.terminate()
    server.join()
