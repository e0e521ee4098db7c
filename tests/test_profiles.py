"""Named cluster profiles: Argo settings outside the notebook (`cellpipe profile`, `--profile`,
`$CELLPIPE_PROFILE`, `GET /profiles`), against the real `cellpipe` command, a real Jupyter
server and the fake Kubernetes API server (tests/fake_k8s.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from fake_k8s import FakeCluster, Script
from nbbuild import notebook, write
from test_argo_backend import _trailer_log
from test_server import call, error_of, wait_for

TEAM = {"namespace": "ml", "registry": "registry.example.org/team", "existing_claim": "shared"}


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with FakeCluster(tmp_path / "cluster", execute=False) as cluster:
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setenv("CELLPIPE_ARGO_POLL", "1")
        yield cluster


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "team.json").write_text(json.dumps({"description": "the team's", "argo": TEAM}))
    return folder


def _env(folder: Path, **more: str) -> dict[str, str]:
    return {"CELLPIPE_PROFILE_DIR": str(folder), **more}


def _compiled(cli, nb: Path, *extra: str, **env: str) -> dict:
    proc = cli("compile", str(nb), "--target", "argo", *extra, env=env)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def _images(doc: dict) -> set[str]:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    return {
        t["container"]["image"].rsplit(":", 1)[0] for t in spec["templates"] if "container" in t
    }


def _claims(doc: dict) -> list[str]:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    volumes = spec.get("volumes", [])
    return [
        v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
    ]


# -- the `cellpipe profile` command -------------------------------------------------------------


def test_profile_add_writes_a_checked_file_that_list_and_show_print(tmp_path: Path, cli) -> None:
    folder = tmp_path / "config" / "profiles"
    env = _env(folder)
    proc = cli(
        "profile",
        "add",
        "team",
        "--set",
        "namespace=ml",
        "--set",
        "registry=127.0.0.1:5000/library",
        "--set",
        "ttl_after_success=60",
        "--set",
        'image_pull_secrets=["pull-secret"]',
        "--description",
        "the team's cluster",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote profile team: {folder / 'team.json'}"
    assert json.loads((folder / "team.json").read_text()) == {
        "description": "the team's cluster",
        "argo": {
            "namespace": "ml",
            "registry": "127.0.0.1:5000/library",
            "ttl_after_success": 60,
            "image_pull_secrets": ["pull-secret"],
        },
    }
    listed = cli("profile", "list", env=env)
    assert listed.stdout.splitlines() == [f"profiles in {folder}:", "  team  the team's cluster"]
    shown = cli("profile", "show", "team", env=env)
    assert f"profile team: {folder / 'team.json'}" in shown.stdout
    assert 'argo.registry: "127.0.0.1:5000/library"' in shown.stdout
    again = cli("profile", "add", "team", "--set", "namespace=other", env=env)
    assert again.returncode == 2
    assert "profile team exists" in again.stderr and "--replace" in again.stderr


def test_an_unknown_setting_is_refused_with_a_suggestion_and_nothing_is_written(
    tmp_path: Path, cli
) -> None:
    folder = tmp_path / "profiles"
    proc = cli(
        "profile", "add", "team", "--set", "regsitry=registry.example.org/team", env=_env(folder)
    )
    assert proc.returncode == 2
    assert "argo.regsitry: unknown setting; did you mean `registry`?" in proc.stderr
    assert not (folder / "team.json").exists()


def test_a_hand_written_profile_with_a_bad_key_fails_the_command_naming_file_and_key(
    tmp_path: Path, profiles: Path, cli
) -> None:
    (profiles / "typo.json").write_text(json.dumps({"descripton": "x", "argo": {}}))
    (profiles / "root.json").write_text(json.dumps({"argo": {"run_as_user": 0}}))
    nb = write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1")))
    proc = cli("compile", str(nb), "--target", "argo", "--profile", "typo", env=_env(profiles))
    assert proc.returncode == 2
    assert (
        f"profile typo ({profiles / 'typo.json'}): descripton: unknown key; did you mean "
        "`description`?" in proc.stderr
    )
    proc = cli("compile", str(nb), "--target", "argo", "--profile", "root", env=_env(profiles))
    assert proc.returncode == 2
    assert "argo.run_as_user: steps never run as root" in proc.stderr
    listed = cli("profile", "list", env=_env(profiles)).stdout
    assert "typo  (cannot be used: profile typo" in listed
    assert "  team  the team's" in listed


def test_a_missing_profile_names_the_folder_it_looked_in_and_the_profiles_there(
    tmp_path: Path, profiles: Path, cli
) -> None:
    nb = write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1")))
    proc = cli("compile", str(nb), "--target", "argo", "--profile", "teams", env=_env(profiles))
    assert proc.returncode == 2
    assert (
        f"no profile 'teams' in {profiles} (profiles there: team; did you mean `team`?)"
        in proc.stderr
    )
    empty = tmp_path / "nowhere"
    proc = cli("compile", str(nb), "--target", "argo", env=_env(empty, CELLPIPE_PROFILE="prod"))
    assert f"no profile 'prod' in {empty} (that folder does not exist)" in proc.stderr


# -- what a profile sets, and what wins over it -------------------------------------------------


def test_compile_target_argo_takes_namespace_registry_and_claim_from_the_profile(
    tmp_path: Path, profiles: Path, cli
) -> None:
    nb = write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1")))
    doc = _compiled(cli, nb, "--profile", "team", **_env(profiles))
    assert doc["metadata"]["namespace"] == "ml"
    assert _images(doc) == {"registry.example.org/team/cellpipe-step"}
    assert _claims(doc) == ["shared"]


def test_cellpipe_profile_selects_a_profile_and_an_empty_flag_selects_none(
    tmp_path: Path, profiles: Path, cli
) -> None:
    nb = write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1")))
    by_env = _compiled(cli, nb, **_env(profiles, CELLPIPE_PROFILE="team"))
    assert by_env["metadata"]["namespace"] == "ml"
    none = _compiled(cli, nb, "--profile", "", **_env(profiles, CELLPIPE_PROFILE="team"))
    assert "namespace" not in none["metadata"]
    assert _images(none) == {"cellpipe-step"}


def test_the_notebook_wins_over_the_profile_and_options_over_both(
    tmp_path: Path, profiles: Path, cli
) -> None:
    nb = write(
        tmp_path / "nb.ipynb",
        notebook(("step:a", "x = 1"), metadata={"cellpipe": {"argo": {"namespace": "nb-ns"}}}),
    )
    env = _env(profiles, CELLPIPE_PROFILE="team")
    doc = _compiled(cli, nb, **env)
    assert doc["metadata"]["namespace"] == "nb-ns"  # the notebook's
    assert _images(doc) == {
        "registry.example.org/team/cellpipe-step"
    }  # the profile's: the notebook has none
    proc = cli(
        "schedule", str(nb), "--cron", "0 3 * * *", "--namespace", "cli-ns", "-o", "-", env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["metadata"]["namespace"] == "cli-ns"  # the option's


def test_profile_is_refused_with_a_backend_that_is_not_argo(
    tmp_path: Path, profiles: Path, cli
) -> None:
    nb = write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1")))
    proc = cli("run", str(nb), "--profile", "team", env=_env(profiles))
    assert proc.returncode == 2
    assert "--profile holds Argo settings: use it with --backend argo" in proc.stderr
    local = cli("run", str(nb), env=_env(profiles, CELLPIPE_PROFILE="missing"))
    assert local.returncode == 0, local.stderr  # $CELLPIPE_PROFILE concerns argo runs only


def test_image_build_push_without_a_registry_anywhere_says_where_one_can_be_given(
    tmp_path: Path, profiles: Path, cli
) -> None:
    nb = write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1")))
    proc = cli("image", "build", str(nb), "--push", env=_env(profiles))
    assert proc.returncode == 2
    assert (
        "--push needs --registry PREFIX (or a registry in metadata.cellpipe.argo or the "
        "profile)" in proc.stderr
    )


def test_image_build_names_images_for_the_option_else_the_notebook_else_the_profile(
    tmp_path: Path, profiles: Path, cli
) -> None:
    made: list[str] = []

    def refs(nb: Path, *extra: str) -> set[str]:
        proc = cli(
            "image",
            "build",
            str(nb),
            "--json",
            "--profile",
            "team",
            *extra,
            timeout=900,
            env=_env(profiles),
        )
        assert proc.returncode == 0, proc.stderr
        built = [i["ref"] for i in json.loads(proc.stdout)]
        made.extend(built)
        return {ref.rsplit(":", 1)[0] for ref in built}

    plain = write(tmp_path / "plain.ipynb", notebook(("step:a", "x = 1")))
    own = write(
        tmp_path / "own.ipynb",
        notebook(
            ("step:a", "x = 1"), metadata={"cellpipe": {"argo": {"registry": "nb.example/x"}}}
        ),
    )
    try:
        assert refs(plain) == {"registry.example.org/team/cellpipe-step"}
        assert refs(own) == {"nb.example/x/cellpipe-step"}
        assert refs(own, "--registry", "cli.example/y") == {"cli.example/y/cellpipe-step"}
    finally:
        import docker

        client = docker.from_env()
        for ref in made:  # only the tags: the image stays for whoever else names it
            client.images.remove(ref, noprune=True)
        client.close()


def test_a_run_on_argo_uses_the_profile_and_its_resume_keeps_those_settings(
    tmp_path: Path,
    profiles: Path,
    fake: FakeCluster,
    cli,
) -> None:
    nb = write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1"), ("step:b", "print(x)")))
    fake.scripts["a"] = [Script(log=_trailer_log("a", "a ran\n"))]
    fake.scripts["b"] = [Script(log=_trailer_log("b", "b failed\n", state="failed"))]
    env = _env(profiles, KUBECONFIG=os.environ["KUBECONFIG"], CELLPIPE_ARGO_POLL="1")
    (profiles / "team.json").write_text(json.dumps({"argo": {"namespace": "ml"}}))
    proc = cli("run", str(nb), "--backend", "argo", "--profile", "team", "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    assert fake.submitted[0]["metadata"]["namespace"] == "ml"
    # The file changes after the run started; the resume goes on where the run was.
    (profiles / "team.json").write_text(json.dumps({"argo": {"namespace": "elsewhere"}}))
    fake.scripts["b"] = [Script(log=_trailer_log("b", "b ran\n"))]
    resumed = cli("run", "--resume", run_id, "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert [w["metadata"]["namespace"] for w in fake.submitted] == ["ml", "ml"]
    refused = cli("run", "--resume", run_id, "--profile", "team", env=env)
    assert refused.returncode == 2
    assert "--resume keeps the run's profile settings" in refused.stderr


# -- the server: GET /profiles, POST /runs with a profile ---------------------------------------


@pytest.fixture
def jp_server_config(tmp_path: Path, profiles: Path) -> dict:
    (profiles / "broken.json").write_text("{not json")
    return {
        "ServerApp": {"jpserver_extensions": {"cellpipe_server": True}},
        "CellpipeApp": {
            "runs_root": str(tmp_path / "cellpipe-runs"),
            "poll_interval": 0.05,
            "profile_dir": str(profiles),
            "default_profile": "team",
        },
    }


async def test_get_profiles_lists_each_profile_its_settings_and_the_default(
    jp_fetch, profiles: Path
) -> None:
    data = await call(jp_fetch, "GET", "profiles")
    assert data["folder"] == str(profiles)
    assert data["default"] == "team"
    by_name = {p["name"]: p for p in data["profiles"]}
    assert sorted(by_name) == ["broken", "team"]
    assert by_name["team"] == {
        "name": "team",
        "path": str(profiles / "team.json"),
        "description": "the team's",
        "context": None,
        "argo": TEAM,
        "error": "",
    }
    assert by_name["broken"]["error"].startswith(
        f"profile broken ({profiles / 'broken.json'}) is not valid JSON"
    )


async def test_profiles_are_refused_without_a_valid_token(jp_fetch) -> None:
    from tornado.httpclient import HTTPClientError

    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("cellpipe", "api", "profiles", headers={"Authorization": ""})
    assert err.value.code == 403


async def test_an_argo_run_from_the_server_runs_with_the_profile_it_names(
    jp_fetch,
    jp_root_dir: Path,
    profiles: Path,
    fake: FakeCluster,
) -> None:
    write(jp_root_dir / "nb.ipynb", notebook(("step:a", "x = 1")))
    (profiles / "other.json").write_text(json.dumps({"argo": {"namespace": "other-ns"}}))
    fake.scripts["a"] = [Script(log=_trailer_log("a", "a ran\n"))] * 2
    named = await call(
        jp_fetch, "POST", "runs", body={"path": "nb.ipynb", "backend": "argo", "profile": "other"}
    )
    assert (await wait_for(jp_fetch, named["run_id"]))["state"] == "succeeded"
    default = await call(jp_fetch, "POST", "runs", body={"path": "nb.ipynb", "backend": "argo"})
    assert (await wait_for(jp_fetch, default["run_id"]))["state"] == "succeeded"
    assert [w["metadata"]["namespace"] for w in fake.submitted] == ["other-ns", "ml"]
    code, body = await error_of(
        jp_fetch, "POST", "runs", body={"path": "nb.ipynb", "backend": "argo", "profile": "nope"}
    )
    assert code == 400
    assert body["message"].startswith(f"no profile 'nope' in {profiles} (profiles there: ")


def test_runs_started_from_python_take_the_profile_cellpipe_profile_selects(
    tmp_path: Path, profiles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cellpipe.driving.driver import prepare_run

    monkeypatch.setenv("CELLPIPE_PROFILE_DIR", str(profiles))
    monkeypatch.setenv("CELLPIPE_PROFILE", "team")
    nb = write(tmp_path / "nb.ipynb", notebook(("step:a", "x = 1")))
    argo = prepare_run(tmp_path / "runs", nb, backend="argo")
    assert argo.info()["options"]["profile"]["argo"] == TEAM
    local = prepare_run(tmp_path / "runs", nb, backend="local")
    assert "profile" not in local.info()["options"]
