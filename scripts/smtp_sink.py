"""An SMTP server for the mail benchmarks: aiosmtpd on loopback, accepting every message.

Usage: smtp_sink.py PORT. Prints "ready" once it listens, then one line per accepted
message (its recipients, space-separated), flushed at once, so the benchmark can time each
acceptance. Stops when its standard input closes (the benchmark exited).
"""

import sys
import threading

from aiosmtpd.controller import Controller


class Handler:
    async def handle_DATA(self, server, session, envelope):
        sys.stdout.write(" ".join(envelope.rcpt_tos) + "\n")
        sys.stdout.flush()
        return "250 Message accepted for delivery"


def main():
    port = int(sys.argv[1])
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    done = threading.Event()

    def watch_stdin():
        sys.stdin.read()
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait()
    controller.stop()


if __name__ == "__main__":
    main()
