#!/usr/bin/env python3
"""XSUB/XPUB relay for Dynamo's ZMQ event-plane "broker mode".

    python scripts/dynamo/zmq_broker.py tcp://127.0.0.1:15555 tcp://127.0.0.1:15556

Without a broker every Dynamo event publisher binds tcp://0.0.0.0:<random>
(hard-coded; DYN_EVENT_PLANE_HOST only changes the advertised address). With
DYN_ZMQ_BROKER_URL="xsub=<first>,xpub=<second>" publishers connect to this
relay instead, so nothing listens beyond the addresses given here.
"""

import signal
import sys

import zmq


def main():
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} XSUB_ENDPOINT XPUB_ENDPOINT")
    # Python turns SIGINT into KeyboardInterrupt only between bytecodes, which
    # never run while zmq.proxy blocks in C; the default action makes Ctrl-C work.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    ctx = zmq.Context()
    xsub = ctx.socket(zmq.XSUB)
    xsub.bind(sys.argv[1])
    xpub = ctx.socket(zmq.XPUB)
    xpub.bind(sys.argv[2])
    print(f"zmq broker: xsub={sys.argv[1]} xpub={sys.argv[2]}", flush=True)
    zmq.proxy(xsub, xpub)


if __name__ == "__main__":
    main()
