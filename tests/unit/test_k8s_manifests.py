"""The Kubernetes manifests: every object Kustomize builds (base and example overlay) and
every ops Job validates against the schemas of a current Kubernetes release, offline; and
the wiring the schemas cannot see holds (replicas vs BYTEWAX_ADDRESSES, recovery layout,
NetworkPolicies, the ConfigMap's settings, the image)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from connectors.catalogue import catalogue_files, load_catalogue
from runtime.settings import Settings
from tests.kube import K8S, ROOT, Manifest, build, find, image_entrypoint, pod_containers

KUBERNETES = "1.34"  # a current release; kubernetes-validate ships its schemas
BUILDS = {"base": K8S / "base", "example overlay": K8S / "overlays" / "example"}
CATALOGUE = ROOT / "catalogue"


@pytest.fixture(scope="module", params=sorted(BUILDS))
def manifests(request: pytest.FixtureRequest) -> list[Manifest]:
    return build(BUILDS[request.param])


def ops_manifests() -> list[Manifest]:
    return [
        doc
        for path in sorted((K8S / "ops").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_every_object_validates_against_the_kubernetes_schemas(
    manifests: list[Manifest],
) -> None:
    for manifest in [*manifests, *ops_manifests()]:
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_the_validation_is_real() -> None:
    statefulset = copy.deepcopy(find(build(K8S / "base"), "StatefulSet", "fleetwatch-alerts"))
    statefulset["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES, strict=True)
    statefulset["spec"]["replicas"] = 3
    statefulset["spec"]["template"]["spec"]["containers"][0]["envv"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES, strict=True)


def env_of(statefulset: Manifest, container: str | None = None) -> dict[str, str]:
    spec = statefulset["spec"]["template"]["spec"]
    (main,) = [c for c in spec["containers"] if container in (None, c["name"])]
    return {e["name"]: e["value"] for e in main.get("env", []) if "value" in e}


def test_each_bytewax_cluster_lists_every_pod_by_its_headless_name(
    manifests: list[Manifest],
) -> None:
    clusters = [
        m for m in manifests if m["kind"] == "StatefulSet" and "BYTEWAX_ADDRESSES" in env_of(m)
    ]
    assert {c["metadata"]["name"] for c in clusters} == {"fleetwatch-alerts", "fleetwatch-archive"}
    for statefulset in clusters:
        name, replicas = statefulset["metadata"]["name"], statefulset["spec"]["replicas"]
        env = env_of(statefulset)
        assert env["BYTEWAX_ADDRESSES"].split(";") == [
            f"{name}-{i}.{statefulset['spec']['serviceName']}:9999" for i in range(replicas)
        ]
        assert env["BYTEWAX_STATEFULSET_NAME"] == name
        service = find(manifests, "Service", statefulset["spec"]["serviceName"])
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["publishNotReadyAddresses"] is True
        assert statefulset["spec"]["podManagementPolicy"] == "Parallel"


def test_recovery_lives_on_a_volume_per_pod_prepared_by_the_init_container(
    manifests: list[Manifest],
) -> None:
    for name in ("fleetwatch-alerts", "fleetwatch-notify", "fleetwatch-store"):
        statefulset = find(manifests, "StatefulSet", name)
        spec = statefulset["spec"]
        (init,) = spec["template"]["spec"]["initContainers"]
        init_env = {e["name"]: e.get("value") for e in init["env"]}
        recovery_dir = env_of(statefulset)["BYTEWAX_RECOVERY_DIRECTORY"]
        assert init["command"][-2:] == ["fleetwatch.recovery_layout", "init"]
        assert init_env["BYTEWAX_RECOVERY_DIRECTORY"] == recovery_dir
        assert init_env["BYTEWAX_STATEFULSET_NAME"] == name
        assert int(init_env["FLEET_RECOVERY_INITIAL_REPLICAS"]) <= int(
            init_env["FLEET_RECOVERY_PARTITIONS"]
        )
        assert spec["replicas"] <= int(init_env["FLEET_RECOVERY_PARTITIONS"])
        (claim,) = spec["volumeClaimTemplates"]
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]  # never a shared filesystem
        mounts = {
            m["mountPath"]: m["name"]
            for c in (init, *spec["template"]["spec"]["containers"])
            for m in c["volumeMounts"]
        }
        assert mounts[recovery_dir] == claim["metadata"]["name"]


def test_the_worker_port_is_open_only_to_the_flows_own_pods(manifests: list[Manifest]) -> None:
    for flow in ("alerts", "archive"):
        policy = find(manifests, "NetworkPolicy", f"fleetwatch-{flow}-cluster")
        statefulset = find(manifests, "StatefulSet", f"fleetwatch-{flow}")
        pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
        worker_rules = [r for r in policy["spec"]["ingress"] if {"port": 9999} in r["ports"]]
        (rule,) = worker_rules
        (peer,) = rule["from"]
        assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert "namespaceSelector" not in peer
        other_flow = "archive" if flow == "alerts" else "alerts"
        other_labels = find(manifests, "StatefulSet", f"fleetwatch-{other_flow}")["spec"][
            "template"
        ]["metadata"]["labels"]
        assert not peer["podSelector"]["matchLabels"].items() <= other_labels.items()


def test_every_pod_is_scraped_and_hardened(manifests: list[Manifest]) -> None:
    workloads = [m for m in manifests if m["kind"] in ("StatefulSet", "Job")]
    assert workloads
    for workload in workloads:
        pod = workload["spec"]["template"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        for container in pod["spec"]["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert "memory" in container["resources"]["limits"]
        if workload["kind"] == "StatefulSet" and workload["metadata"]["name"] != "mosquitto":
            assert pod["metadata"]["annotations"]["prometheus.io/port"] == "3030"
            (main,) = pod["spec"]["containers"]
            assert main["readinessProbe"]["httpGet"]["path"] == "/metrics"
            assert env_of(workload)["BYTEWAX_DATAFLOW_API_ENABLED"] == "true"
            assert find(manifests, "PodDisruptionBudget", workload["metadata"]["name"])


def test_the_config_map_holds_valid_settings(manifests: list[Manifest]) -> None:
    data = find(manifests, "ConfigMap", "fleetwatch-config")["data"]
    settings = Settings.from_env(data)  # raises, naming the variable, on a bad value
    assert settings.topics.telemetry == "fleet.telemetry"
    source = (ROOT / "runtime" / "settings.py").read_text()
    for key in data:
        assert key.startswith("FLEET_")
        assert f'"{key}"' in source or key.startswith("FLEET_KAFKA_"), f"unknown setting {key}"


def test_no_secret_values_are_committed(manifests: list[Manifest]) -> None:
    assert not [m for m in manifests if m["kind"] == "Secret"]
    refs = re.findall(r"secretKeyRef:\s+name: (\S+)", yaml.safe_dump_all(manifests))
    assert set(refs) <= {
        "fleetwatch-kafka",
        "fleetwatch-mqtt",
        "fleetwatch-notify",
        "fleetwatch-aws",
    }


def test_the_image_runs_bytewax_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert image_entrypoint() == ["python", "-m", "bytewax.run"]
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert re.search(r"^USER 10001", dockerfile, re.M)
    assert re.search(r"^EXPOSE 9999 3030$", dockerfile, re.M)
    assert "-c constraints.txt" in dockerfile
    for package in ("bytewax", "confluent-kafka", "polars", "paho-mqtt"):
        assert re.search(rf"^{package}==", (ROOT / "constraints.txt").read_text(), re.M | re.I)


def test_every_yaml_file_in_k8s_is_used_or_is_an_ops_job() -> None:
    used = {p.name for p in (K8S / "base").iterdir()}
    listed = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"]
    # The one resource outside the base: the catalogue's own kustomization.
    assert set(listed) - used == {"../../catalogue"}
    assert (CATALOGUE / "kustomization.yaml").is_file()
    for path in (K8S / "base").glob("*.yaml"):
        assert path.name in (*listed, "kustomization.yaml"), f"{path} is not in the base"
    assert all(d["kind"] == "Job" for d in ops_manifests())
    assert Path(K8S / "ops").is_dir()


def mounts_of(statefulset: Manifest) -> dict[str, Manifest]:
    """The main container's volume mounts by volume name."""
    (main,) = statefulset["spec"]["template"]["spec"]["containers"]
    return {m["name"]: m for m in main["volumeMounts"]}


def config_map_volume(statefulset: Manifest, volume: str) -> str:
    (found,) = [
        v for v in statefulset["spec"]["template"]["spec"]["volumes"] if v["name"] == volume
    ]
    return str(found["configMap"]["name"])


def test_the_alerts_pods_read_the_catalogue_from_config_maps_mounted_as_directories(
    manifests: list[Manifest],
) -> None:
    alerts = find(manifests, "StatefulSet", "fleetwatch-alerts")
    env, mounts = env_of(alerts), mounts_of(alerts)
    # A subPath mount never sees a changed ConfigMap: the catalogue would need a restart.
    for volume in ("rules", "zones"):
        assert "subPath" not in mounts[volume]
        assert "subPathExpr" not in mounts[volume]
        assert mounts[volume]["readOnly"] is True
    assert env["FLEET_RULES"] == mounts["rules"]["mountPath"]
    zones_dir, _, zones_key = env["FLEET_ZONES"].rpartition("/")
    assert zones_dir == mounts["zones"]["mountPath"]
    rules = find(manifests, "ConfigMap", config_map_volume(alerts, "rules"))
    zones = find(manifests, "ConfigMap", config_map_volume(alerts, "zones"))
    assert set(zones["data"]) == {zones_key}
    # The alerts pods' own: every flow reads fleetwatch-config, and a flow without the mount
    # would refuse to start on a FLEET_RULES directory that is not there.
    shared = find(manifests, "ConfigMap", "fleetwatch-config")["data"]
    assert not {"FLEET_RULES", "FLEET_ZONES"} & set(shared)
    # Kubernetes refuses a ConfigMap over 1 MiB.
    for config_map in (rules, zones):
        assert sum(len(v.encode()) for v in config_map["data"].values()) < 1024 * 1024


def test_the_catalogue_config_maps_keep_their_names_so_changes_reach_running_pods(
    manifests: list[Manifest],
) -> None:
    """With kustomize's content hash in the name, every rule change would be a new pod
    template (a restart of the cluster); with a fixed name the kubelet swaps the files."""
    for name in ("fleetwatch-rules", "fleetwatch-zones"):
        find(manifests, "ConfigMap", name)  # the exact name: no hash suffix
    generators = yaml.safe_load((CATALOGUE / "kustomization.yaml").read_text())[
        "configMapGenerator"
    ]
    assert {g["name"] for g in generators} == {"fleetwatch-rules", "fleetwatch-zones"}
    for generator in generators:
        assert generator["options"]["disableNameSuffixHash"] is True


def test_the_rules_config_map_is_the_sample_catalogue_and_loads(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    """Every file of catalogue/rules/ is in the ConfigMap, byte for byte, and nothing else;
    written out as the kubelet would, it loads strictly."""
    rules = find(manifests, "ConfigMap", "fleetwatch-rules")["data"]
    zones = find(manifests, "ConfigMap", "fleetwatch-zones")["data"]
    sample = {path.name: path.read_text() for path in catalogue_files(CATALOGUE / "rules")}
    assert len(sample) >= 2
    assert rules == sample
    assert zones == {"zones.geojson": (CATALOGUE / "zones.geojson").read_text()}
    (tmp_path / "rules").mkdir()
    for key, text in rules.items():
        (tmp_path / "rules" / key).write_text(text)
    (tmp_path / "zones.geojson").write_text(zones["zones.geojson"])
    catalogue = load_catalogue(tmp_path / "rules", tmp_path / "zones.geojson")
    assert [v.version for v in catalogue.versions] == [1, 2, 3]


def test_both_archives_write_the_one_lake_volume_at_fleet_lake_dir(
    manifests: list[Manifest],
) -> None:
    lake_dir = find(manifests, "ConfigMap", "fleetwatch-config")["data"]["FLEET_LAKE_DIR"]
    for name, module in (
        ("fleetwatch-archive", "dataflows.archive"),
        ("fleetwatch-archive-alerts", "dataflows.archive_alerts"),
    ):
        statefulset = find(manifests, "StatefulSet", name)
        (main,) = statefulset["spec"]["template"]["spec"]["containers"]
        assert main["args"] == [module]
        assert mounts_of(statefulset)["lake"]["mountPath"] == lake_dir
        (lake,) = [
            v for v in statefulset["spec"]["template"]["spec"]["volumes"] if v["name"] == "lake"
        ]
        assert lake["persistentVolumeClaim"]["claimName"] == "fleetwatch-lake"


def test_the_scorecards_the_alerts_pods_write_are_archived_where_their_alerts_are(
    manifests: list[Manifest],
) -> None:
    """Wherever the alerts run with scorecards to Kafka, the alerts archive runs too, reading
    the topic they write (dataflows.archive_alerts archives FLEET_TOPIC_SCORECARDS beside
    FLEET_TOPIC_ALERTS) into the lake the history refresh and the tools read."""
    alerts = find(manifests, "StatefulSet", "fleetwatch-alerts")
    archive = find(manifests, "StatefulSet", "fleetwatch-archive-alerts")
    _, writer = pod_containers(manifests, alerts, 0, {})
    _, archiver = pod_containers(manifests, archive, 0, {})
    assert writer.env["FLEET_SCORECARDS_OUT"] == "kafka"
    assert archiver.command[-1] == "dataflows.archive_alerts"
    written, archived = Settings.from_env(writer.env), Settings.from_env(archiver.env)
    assert archived.topics.scorecards == written.topics.scorecards
    assert archived.topics.alerts == written.topics.alerts
    assert archived.lake.dir is not None
    assert archiver.mounts[str(archived.lake.dir)] == "lake"
    assert not mounts_of(archive)["lake"].get("readOnly", False), "it writes the lake"


def test_the_history_refresh_runs_nightly_on_the_lake_and_writes_the_history_volume(
    manifests: list[Manifest],
) -> None:
    """The CronJob of docs/history.md: ``fleetwatch.history refresh`` with the flows' settings,
    the lake read-only at FLEET_LAKE_DIR, the history volume the alerts pods read (mounted
    read-only there) writable at FLEET_HISTORY_DIR; one run at a time; hardened as the rest."""
    settings = find(manifests, "ConfigMap", "fleetwatch-config")["data"]
    cron = find(manifests, "CronJob", "fleetwatch-history-refresh")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert re.fullmatch(r"\d+ \d+ \* \* \*", spec["schedule"])  # once a day
    assert spec["timeZone"] == "Etc/UTC"  # FLEET_TIMEZONE's default: keep them equal
    assert "FLEET_TIMEZONE" not in settings
    pod = spec["jobTemplate"]["spec"]["template"]
    (main,) = pod["spec"]["containers"]
    assert main["command"] == ["python", "-m", "fleetwatch.history", "refresh"]
    assert main["envFrom"] == [{"configMapRef": {"name": "fleetwatch-config"}}]
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    claims = {
        v["name"]: v["persistentVolumeClaim"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert mounts["lake"]["mountPath"] == settings["FLEET_LAKE_DIR"]
    assert mounts["lake"]["readOnly"] is True
    assert claims["lake"] == {"claimName": "fleetwatch-lake", "readOnly": True}
    assert mounts["history"]["mountPath"] == settings["FLEET_HISTORY_DIR"]
    assert not mounts["history"].get("readOnly", False)
    assert not claims["history"].get("readOnly", False)
    alerts = find(manifests, "StatefulSet", "fleetwatch-alerts")
    alerts_claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in alerts["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims["history"]["claimName"] == alerts_claims["history"]
    assert mounts_of(alerts)["history"]["mountPath"] == settings["FLEET_HISTORY_DIR"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert "memory" in main["resources"]["limits"]
    assert mounts["tmp"]["mountPath"] == "/tmp"  # Polars may spill there
    policy = find(manifests, "NetworkPolicy", "fleetwatch-metrics-only")
    (selector,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] in selector["values"]


def test_the_report_runs_nightly_for_yesterday_into_the_reports_volume(
    manifests: list[Manifest],
) -> None:
    """The CronJob of docs/report.md: ``fleetwatch.report --day yesterday`` with the flows'
    settings, the lake and the history read-only where FLEET_LAKE_DIR and FLEET_HISTORY_DIR
    say, the page into the reports volume as <day>.html; before the history refresh rewrites
    drivers.parquet; hardened as the rest, matplotlib's cache in /tmp."""
    settings = find(manifests, "ConfigMap", "fleetwatch-config")["data"]
    cron = find(manifests, "CronJob", "fleetwatch-report")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert re.fullmatch(r"\d+ \d+ \* \* \*", spec["schedule"])  # once a day
    assert spec["timeZone"] == "Etc/UTC"  # FLEET_TIMEZONE's default: keep them equal
    assert "FLEET_TIMEZONE" not in settings
    minute, hour = (int(n) for n in spec["schedule"].split()[:2])
    refresh = find(manifests, "CronJob", "fleetwatch-history-refresh")["spec"]["schedule"]
    refresh_minute, refresh_hour = (int(n) for n in refresh.split()[:2])
    assert (hour, minute) < (refresh_hour, refresh_minute), "the names as of the day"
    # Yesterday's scorecards are out FLEET_SCORECARD_GRACE_S (600 s) after midnight, and in
    # the lake within FLEET_LAKE_ROLL_S after that.
    grace_s = float(settings.get("FLEET_SCORECARD_GRACE_S", 600))
    roll_s = float(settings.get("FLEET_LAKE_ROLL_S", 300))
    assert hour * 3600 + minute * 60 >= 2 * (grace_s + roll_s)
    pod = spec["jobTemplate"]["spec"]["template"]
    (main,) = pod["spec"]["containers"]
    command = main["command"]
    assert command[:3] == ["python", "-m", "fleetwatch.report"]
    assert command[command.index("--day") + 1] == "yesterday"
    out = command[command.index("--out") + 1]
    assert main["envFrom"] == [{"configMapRef": {"name": "fleetwatch-config"}}]
    env = {e["name"]: e["value"] for e in main["env"]}
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    claims = {
        v["name"]: v["persistentVolumeClaim"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert mounts["lake"]["mountPath"] == settings["FLEET_LAKE_DIR"]
    assert mounts["history"]["mountPath"] == settings["FLEET_HISTORY_DIR"]
    for name, claim in (("lake", "fleetwatch-lake"), ("history", "fleetwatch-history")):
        assert mounts[name]["readOnly"] is True
        assert claims[name] == {"claimName": claim, "readOnly": True}
    assert out == f"{mounts['reports']['mountPath']}/{{day}}.html"
    assert claims["reports"] == {"claimName": "fleetwatch-reports"}
    assert not mounts["reports"].get("readOnly", False)
    find(manifests, "PersistentVolumeClaim", "fleetwatch-reports")
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert env["MPLCONFIGDIR"].startswith("/tmp/")
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert "memory" in main["resources"]["limits"]
    policy = find(manifests, "NetworkPolicy", "fleetwatch-metrics-only")
    (selector,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] in selector["values"]
