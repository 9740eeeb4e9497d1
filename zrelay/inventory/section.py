"""The ``zrelay:`` section of an inventory: settings, S3 targets and jobs.

Internal to zrelay.inventory: the part of a zrelay inventory that Ansible has no
word for, read from its YAML nodes into the Builder, each value checked where it
is written (the checks are in ``values``).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from zrelay.errors import UsageError
from zrelay.inventory.build import Builder, RawJob
from zrelay.inventory.exclude_keys import check_exclude, read_exclude
from zrelay.inventory.bandwidth_keys import read_bandwidth_groups
from zrelay.inventory.lifecycle_keys import SNAPSHOT_KEYS, read_hooks, read_keep, read_snapshot
from zrelay.inventory.property_keys import read_properties
from zrelay.inventory.service_keys import DaemonReader, read_job_schedule, read_run_schedule
from zrelay.inventory.model import (DEFAULT_STORAGE_CLASS, S3_SCHEME, Endpoint, S3Ref, S3Target,
                                    Target)
from zrelay.inventory.values import (S3_CHECKS, Bad, check_bandwidth, check_buffer, check_compress, check_positive,
                                     snapshot_name_problem, unknown_key, want_bool, want_duration,
                                     want_send_options, want_str)
from zrelay.inventory.yamlread import MappingNode, Node, NodeReader, SequenceNode
from zrelay.zfs.model import SnapshotFilter
from zrelay.zfs.names import snapshot_problem


class ZrelaySection(NodeReader):
    """Reads the ``zrelay:`` section into ``builder`` (a part of InventoryReader)."""

    builder: Builder

    def read_zrelay(self, node: Node) -> None:
        valid = ["include", "snapshot_name", "limits", "s3_targets", "jobs", "daemon", "bandwidth_groups"]
        for key, key_node, value_node in self.pairs(node, "zrelay section") or []:
            if key == "include":
                continue  # read first, by read_includes
            if key == "snapshot_name":
                self.read_snapshot_name(value_node)
            elif key == "limits":
                self.read_limits(value_node)
            elif key == "s3_targets":
                for name, n_key, n_node in self.pairs(value_node, "s3_targets") or []:
                    self.read_s3_target(name, n_key, n_node)
            elif key == "jobs":
                self.read_jobs(value_node)
            elif key == "bandwidth_groups":
                read_bandwidth_groups(self, self.builder, value_node)
            elif key == "daemon":
                reader = DaemonReader(self)
                daemon = reader.read(value_node)
                if daemon is not None:
                    self.builder.settings["daemon"] = daemon
                    self.builder.daemon_groups.extend(("window", w.group, place) for w, place in reader.window_places)
                    self.builder.daemon_groups.extend(("daemon.group_limits", g, place)
                                                      for g, place in reader.group_places)
            else:
                self.fail(key_node, unknown_key(key, valid, "the zrelay section"))

    def read_snapshot_name(self, node: Node) -> None:
        try:
            template = want_str(self.value(node), "snapshot_name")
        except Bad as bad:
            self.fail(node, str(bad))
            return
        problem = snapshot_name_problem(template)
        if problem:
            self.fail(node, problem)
        else:
            self.builder.settings["snapshot_name"] = template

    def read_limits(self, node: Node) -> None:
        valid = ["sends_per_host", "receives_per_host"]
        for key, key_node, value_node in self.pairs(node, "limits") or []:
            if key not in valid:
                self.fail(key_node, unknown_key(key, valid, "limits"))
                continue
            try:
                self.builder.settings[key] = check_positive(self.value(value_node), key)
            except Bad as bad:
                self.fail(value_node, str(bad))

    def read_s3_target(self, name: str, key_node: Node, node: Node) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            self.fail(key_node, f"S3 target name {name!r} must be letters, digits, '_', '.', '-'")
            return
        where = f"S3 target {name!r}"
        items = self.pairs(node, where)
        if items is None:
            return
        fields: dict[str, Any] = {}
        ok = True
        for key, k_node, v_node in items:
            if key == "push":
                push = read_run_schedule(self, v_node, f"{where}: push", "s3-push")
                if push is None:
                    ok = False
                elif push.follows is not None and push.follows not in ("snapshot", "sync"):
                    self.fail(v_node, f"{where}: push: after {push.follows}? only after snapshot or sync")
                    ok = False
                else:
                    fields["push"] = push
                continue
            check = S3_CHECKS.get(key)
            if check is None:
                self.fail(k_node, unknown_key(key, [*S3_CHECKS, "push"], where))
                ok = False
                continue
            try:
                fields[key] = check(self.value(v_node), key)
            except Bad as bad:
                self.fail(v_node, str(bad))
                ok = False
        if "bucket" not in fields and ok:
            self.fail(node if isinstance(node, MappingNode) else key_node,
                      f"{where} has no 'bucket'")
            ok = False
        if ok:
            fields.setdefault("storage_class", DEFAULT_STORAGE_CLASS)
            self.builder.s3_targets[name] = S3Target(name=name, origin=self.at(key_node), **fields)

    def read_jobs(self, node: Node) -> None:
        if self.is_null(node):
            return
        if not isinstance(node, SequenceNode):
            self.fail(node, f"jobs: expected a list of jobs (each starting with '- source:'), "
                      f"got {self.kind(node)}")
            return
        for item in node.value:
            self.read_job(item)

    def read_job(self, node: Node) -> None:
        job = RawJob(self.at(node))
        items = self.pairs(node, "job")
        if items is None:
            return
        valid = ["source", "name", "recursive", "exclude", "snapshots", "targets", "direct", "send_options",
                 "snapshot", "keep", "hooks", "rpo", "schedule", "allow_rollback",
                 "bandwidth", "properties", "drill_to"]
        exclude_node: Node | None = None
        seen: set[str] = set()
        misspelt: set[str] = set()
        for key, k_node, v_node in items:
            seen.add(key)
            try:
                if key == "source":
                    job.source_origin = self.at(v_node)
                    job.source = self.endpoint(self.value(v_node), "source")
                elif key == "name":
                    job.name_origin = self.at(v_node)
                    job.name = want_str(self.value(v_node), "name")
                    if job.name != job.name.strip():
                        raise Bad(f"name {job.name!r} has leading or trailing whitespace")
                elif key == "recursive":
                    job.recursive = want_bool(self.value(v_node), "recursive")
                elif key == "exclude":
                    exclude_node = k_node
                    globs = read_exclude(self, v_node)
                    if globs is None:
                        job.complete = False
                    else:
                        job.exclude = globs
                elif key == "direct":
                    job.direct = want_bool(self.value(v_node), "direct")
                elif key == "compress":
                    job.compress = check_compress(self.value(v_node), "compress")
                elif key == "buffer":
                    job.buffer = check_buffer(self.value(v_node), "buffer")
                elif key == "send_options":
                    job.send_options = want_send_options(self.value(v_node))
                elif key == "rpo":
                    job.rpo = want_duration(self.value(v_node), "rpo")
                elif key == "allow_rollback":
                    job.allow_rollback = want_bool(self.value(v_node), "allow_rollback")
                elif key == "bandwidth":
                    job.bandwidth = check_bandwidth(self.value(v_node), "bandwidth")
                elif key == "schedule":
                    schedule = read_job_schedule(self, v_node)
                    if schedule is None:
                        job.complete = False
                    else:
                        job.schedule = schedule
                        job.schedule_origin = self.at(k_node)
                elif key == "drill_to":
                    job.drill_to_origin = self.at(v_node)
                    job.drill_to = self.endpoint(self.value(v_node), "drill_to")
                elif key == "properties":
                    props = read_properties(self, v_node, "job")
                    if props is None:
                        job.complete = False
                    else:
                        job.properties = props
                elif key == "snapshots":
                    job.select = self.snapshot_filter(v_node)
                elif key == "targets":
                    self.read_targets(job, v_node)
                elif key in ("snapshot", "keep", "hooks"):
                    read = {"snapshot": read_snapshot, "keep": read_keep, "hooks": read_hooks}[key]
                    if not read(self, k_node, v_node, job.lifecycle):
                        job.complete = False
                else:
                    self.fail(k_node, unknown_key(key, valid, "job"))
                    job.complete = False
                    misspelt.update(difflib.get_close_matches(key, valid, n=1, cutoff=0.6))
            except Bad as bad:
                self.fail(v_node, str(bad))
                job.complete = False
        if exclude_node is not None:
            problem = check_exclude(job.exclude, job.recursive, job.source)
            if problem is not None:
                self.fail(exclude_node, problem)
                job.complete = False
        # a job that only takes and prunes snapshots (no replication) needs no targets
        lifecycle_only = "targets" not in seen and ("snapshot" in seen or "keep" in seen)
        for required in ("source",) if lifecycle_only else ("source", "targets"):
            if required not in seen:
                if required not in misspelt:  # already reported as a misspelt key
                    self.fail(node, f"job has no '{required}' (a job without targets needs 'snapshot:' "
                                    "or 'keep:')" if required == "targets" else f"job has no '{required}'")
                job.complete = False
        self.builder.jobs.append(job)

    @staticmethod
    def endpoint(value: Any, what: str) -> Endpoint:
        text = want_str(value, what)
        try:
            return Endpoint.parse(text)
        except UsageError as exc:
            raise Bad(f"{what}: {exc}") from None

    def snapshot_filter(self, node: Node) -> SnapshotFilter:
        prefix: str | None = None
        regex: str | None = None
        valid = ["prefix", "regex"]
        for key, k_node, v_node in self.pairs(node, "snapshots") or []:
            try:
                if key == "prefix":
                    prefix = want_str(self.value(v_node), "snapshots.prefix")
                    problem = snapshot_problem(prefix)
                    if problem:
                        raise Bad(f"snapshots.prefix: {problem}")
                elif key == "regex":
                    regex = want_str(self.value(v_node), "snapshots.regex")
                    try:
                        re.compile(regex)
                    except re.error as exc:
                        raise Bad(f"snapshots.regex {regex!r} is not a valid regular "
                                  f"expression: {exc}") from None
                else:
                    where = ("; when to take snapshots goes under 'snapshot:'"
                             if key in SNAPSHOT_KEYS else "")
                    self.fail(k_node, unknown_key(key, valid, "snapshots") + where)
            except Bad as bad:
                self.fail(v_node, str(bad))
        return SnapshotFilter(prefix=prefix, regex=regex)

    def read_targets(self, job: RawJob, node: Node) -> None:
        if not isinstance(node, SequenceNode):
            raise Bad(f"targets: expected a list such as [host:pool/dataset, s3:NAME], "
                      f"got {self.kind(node)}")
        if not node.value:
            raise Bad("targets: the list is empty; a job needs at least one target")
        for item in node.value:
            try:
                entry = item
                if isinstance(item, MappingNode):
                    entry = self.target_entry(job, item)
                    if entry is None:
                        job.complete = False
                        continue
                text = want_str(self.value(entry), "target")
                if text.startswith(S3_SCHEME + ":"):
                    s3_name = text[len(S3_SCHEME) + 1:]
                    target: Target = S3Ref(s3_name)
                    if not s3_name:
                        raise Bad(f"target {text!r}: missing S3 target name after 's3:'")
                else:
                    target = self.endpoint(text, "target")
                job.targets.append((target, self.at(entry)))
            except Bad as bad:
                self.fail(entry, str(bad))
                job.complete = False

    def target_entry(self, job: RawJob, node: MappingNode) -> Node | None:
        """``{target: host:pool/ds, properties: {...}}``: the target's node (None: reported as wrong);
        its properties are kept by the target's text, for the Builder."""
        valid = ["target", "properties"]
        target: Node | None = None
        props = None
        ok = True
        for key, k_node, v_node in self.pairs(node, "target entry") or []:
            if key == "target":
                target = v_node
            elif key == "properties":
                props = read_properties(self, v_node, "target entry")
                ok = ok and props is not None
            else:
                self.fail(k_node, unknown_key(key, valid, "a target entry"))
                ok = False
        if target is None:
            self.fail(node, "target entry has no 'target' (write it as {target: host:pool/dataset, properties: ...})")
            return None
        if props is not None and ok:
            text = self.value(target)
            if isinstance(text, str):
                job.target_properties[text] = props
        return target if ok else None
