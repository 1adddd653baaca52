# Copyright: microsvc maintainers
# Apache License 2.0 (see LICENSE)
"""Benchmark only (benchmarks/run.py): where a run of site.yml spends its time.

Writes, to the file named by MICROSVC_BENCH_TIMINGS, one JSON object: every task in the order it
started, with the seconds until the next task started (so controller-side work between tasks is
counted too, and the durations add up to the run), how many results it had that were not skipped
(one per host, or per loop item), and the per-step ``timings`` that ``microsvc.deploy.deploy_batch`` returns.
Not part of the shipped collection.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: bench_timings
type: aggregate
short_description: record task durations and deploy_batch step timings for make bench
description:
  - Writes a JSON summary to the file named by the environment variable MICROSVC_BENCH_TIMINGS.
requirements:
  - enabled with ANSIBLE_CALLBACKS_ENABLED=bench_timings
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timings"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.started = time.perf_counter()
        self.tasks = []
        self.deploy_timings = []

    def _start(self, name):
        self.tasks.append({"name": name, "at": time.perf_counter() - self.started, "results": 0})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task.get_name())

    def v2_playbook_on_handler_task_start(self, task):
        self._start("handler: " + task.get_name())

    def _result(self, result):
        if self.tasks and "results" not in result._result:  # a loop's summary: its items were counted
            self.tasks[-1]["results"] += 1
        timings = result._result.get("timings")
        if isinstance(timings, dict) and result._task.action.endswith("deploy_batch"):
            self.deploy_timings.append({"host": result._host.get_name(), "timings": timings})

    def v2_runner_on_ok(self, result):
        self._result(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result)

    def v2_runner_item_on_ok(self, result):
        self._result(result)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("MICROSVC_BENCH_TIMINGS")
        if not path:
            return
        end = time.perf_counter() - self.started
        for task, following in zip(self.tasks, self.tasks[1:] + [{"at": end}]):
            task["seconds"] = round(following["at"] - task["at"], 3)
            task["at"] = round(task["at"], 3)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"total": round(end, 3), "tasks": self.tasks, "deploy_timings": self.deploy_timings}, handle)
