"""Tutorial 2, "Work Queues": a durable queue, persistent messages, manual
acks and basic_qos(prefetch_count=1).

Run as `work_queues.py PORT` (the driver) it starts two worker processes
(`work_queues.py PORT worker NAME GATE_DIR`) and checks, deterministically:

1. fair dispatch: while worker X holds an unacked task (it blocks until the
   driver opens a gate), every other task goes to worker Y, because X's
   prefetch of 1 is used up;
2. a worker killed with SIGKILL mid-task has its unacked task redelivered to
   the other worker with redelivered=True.

Workers report on stdout, one event per line: "<event> <task> <worker>".
"""

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pika

import common

QUEUE = "task_queue"


def worker(port, name, gate_dir):
    connection = common.connect(port)
    channel = connection.channel()
    channel.queue_declare(queue=QUEUE, durable=True)

    def report(event, task):
        print("%s %s %s" % (event, task, name), flush=True)

    def callback(ch, method, properties, body):
        task = body.decode()
        if properties.delivery_mode != 2:
            report("not-persistent", task)
        if task.startswith("block:"):
            report("started", task)
            gate = os.path.join(gate_dir, task.split(":", 1)[1])
            while not os.path.exists(gate):
                # Keep the connection serviced (heartbeats) while blocked.
                connection.sleep(0.05)
        elif task == "hang":
            if method.redelivered:
                report("redelivered", task)
            else:
                report("started", task)
                while True:  # until SIGKILLed, never acking
                    connection.sleep(0.05)
        else:
            # "task..." takes one tick per dot, as in the tutorial.
            connection.sleep(0.01 * task.count("."))
        ch.basic_ack(delivery_tag=method.delivery_tag)
        report("done", task)

    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue=QUEUE, on_message_callback=callback)
    report("ready", "-")
    channel.start_consuming()


class Workers:
    def __init__(self, port, gate_dir):
        self.events = queue.Queue()
        self.procs = {}
        for name in ("A", "B"):
            proc = subprocess.Popen(
                [sys.executable, "-u", os.path.abspath(__file__), str(port), "worker", name, gate_dir],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            self.procs[name] = proc
            threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()
            threading.Thread(target=self._pump_err, args=(name, proc.stderr), daemon=True).start()
        self.log = []

    def _pump(self, stream):
        for line in stream:
            parts = line.split()
            if len(parts) == 3:
                self.events.put(tuple(parts))

    def _pump_err(self, name, stream):
        for line in stream:
            print("[worker %s stderr] %s" % (name, line.rstrip()), file=sys.stderr, flush=True)

    def expect(self, event, task, timeout=common.TIMEOUT_S):
        """Waits for `event task WORKER`, returns WORKER; keeps other events in the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ev = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            self.log.append(ev)
            if ev[0] == "not-persistent":
                common.fail("task %s arrived without delivery_mode=2" % ev[1])
            if ev[0] == event and ev[1] == task:
                return ev[2]
        common.fail("no '%s %s' within %ss; events so far: %r" % (event, task, timeout, self.log))

    def kill(self, name):
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def new_task(channel, message):
    # new_task.py
    channel.basic_publish(
        exchange="",
        routing_key=QUEUE,
        body=message,
        properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
    )


def driver(port):
    connection = common.connect(port)
    channel = connection.channel()
    channel.queue_declare(queue=QUEUE, durable=True)
    channel.confirm_delivery()

    with tempfile.TemporaryDirectory() as gate_dir:
        workers = Workers(port, gate_dir)
        try:
            workers.expect("ready", "-")
            workers.expect("ready", "-")
            common.wait_until(
                lambda: channel.queue_declare(queue=QUEUE, durable=True, passive=True).method.consumer_count == 2,
                "two consumers on task_queue",
            )

            # 1. Fair dispatch.
            new_task(channel, "block:gate1")
            busy = workers.expect("started", "block:gate1")
            short_tasks = ["short-%d.." % i for i in range(6)]
            for task in short_tasks:
                new_task(channel, task)
            doers = {task: workers.expect("done", task) for task in short_tasks}
            for task, doer in doers.items():
                if doer == busy:
                    common.fail("%s went to worker %s, which still held an unacked task with prefetch_count=1" % (task, busy))
            open(os.path.join(gate_dir, "gate1"), "w").close()
            common.expect_eq(workers.expect("done", "block:gate1"), busy, "worker finishing the blocked task")

            # 2. A worker killed mid-task: its message goes to the other one.
            new_task(channel, "hang")
            victim = workers.expect("started", "hang")
            workers.kill(victim)
            rescuer = workers.expect("redelivered", "hang")
            common.check(rescuer != victim, "the redelivery went to the killed worker %s" % victim)
            workers.expect("done", "hang")

            ok = channel.queue_declare(queue=QUEUE, durable=True, passive=True)
            common.expect_eq(ok.method.message_count, 0, "tasks left in the queue")
        finally:
            workers.stop()
    connection.close()
    print("work queues: ok")


if __name__ == "__main__":
    port = common.port_from_argv()
    if len(sys.argv) >= 5 and sys.argv[2] == "worker":
        worker(port, sys.argv[3], sys.argv[4])
    else:
        driver(port)
