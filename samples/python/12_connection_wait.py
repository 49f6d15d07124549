# The multiprocessing documentation's connection.wait() example (multiprocessing.connection):
# four processes write to pipes, the parent reads whichever is ready until every pipe is at EOF.
from multiprocessing import Process, Pipe, current_process
from multiprocessing.connection import wait


def foo(w):
    for i in range(10):
        w.send((i, current_process().name))
    w.close()


if __name__ == '__main__':
    readers = []

    for i in range(4):
        r, w = Pipe(duplex=False)
        readers.append(r)
        p = Process(target=foo, args=(w,))
        p.start()
        # Close the writable end now, so that p holds the only handle: when p closes it, wait()
        # reports the readable end as ready at once.
        w.close()

    while readers:
        for r in wait(readers):
            try:
                msg = r.recv()
            except EOFError:
                readers.remove(r)
            else:
                print(msg)
