"""kustomization.yaml のイメージをダイジェストで固定する（`kustomize edit set image` と同じ結果）。

単体の kustomize は PyPI・npm・Debian のどれにも無く、kubectl 内蔵の kustomize には edit が無い。
そこで同じ結果（images の該当項目を name・newName・digest にし、newTag を外す）を、コメントと
並びを保つ ruamel.yaml で書く。make release が使う：

  python scripts/k8s_set_image.py --digest-of REGISTRY/REPO:TAG
      push 済みのイメージのレジストリでのダイジェストを REGISTRY/REPO@sha256:... で出力する
  python scripts/k8s_set_image.py OVERLAY_DIR NAME=REGISTRY/REPO@sha256:DIGEST
      OVERLAY_DIR/kustomization.yaml の images を書き換える
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# レジストリのホスト（:ポート）とパス。タグやダイジェストは含めない
REPOSITORY_RE = re.compile(
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::\d+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+"
)
DOCKER_TIMEOUT_S = 60


class UsageError(Exception):
    """入力の誤り（終了コード 2 で理由を出す）。"""


def split_tag(ref: str) -> tuple[str, str]:
    """REGISTRY/REPO:TAG を（リポジトリ, タグ）に分ける（ホストのポートの : は区切りにしない）。"""
    repository, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        raise UsageError(f"{ref!r}: expected REGISTRY/REPOSITORY:TAG")
    return repository, tag


def pick_repo_digest(ref: str, repo_digests: list[str]) -> str:
    """docker の RepoDigests から、ref のリポジトリのものを選ぶ。"""
    repository, _ = split_tag(ref)
    found = sorted({d for d in repo_digests if d.partition("@")[0] == repository})
    if not found:
        raise UsageError(f"{ref}: no registry digest recorded: push it first (docker push {ref})")
    if len(found) > 1:
        raise UsageError(f"{ref}: several digests for {repository}: {found}")
    return found[0]


def docker_repo_digests(ref: str) -> list[str]:
    """docker image inspect の RepoDigests。"""
    proc = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", ref],
        capture_output=True,
        text=True,
        timeout=DOCKER_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise UsageError(f"docker image inspect {ref} failed: {proc.stderr.strip()}")
    digests: list[str] = json.loads(proc.stdout) or []
    return digests


def parse_assignment(text: str) -> tuple[str, str, str]:
    """NAME=REGISTRY/REPO@sha256:DIGEST を（名前, 新しい名前, ダイジェスト）にする。"""
    name, sep, target = text.partition("=")
    new_name, at, digest = target.partition("@")
    if not (sep and name and at):
        raise UsageError(f"{text!r}: expected NAME=REGISTRY/REPOSITORY@sha256:DIGEST")
    if not REPOSITORY_RE.fullmatch(new_name):
        raise UsageError(f"{new_name!r}: expected REGISTRY/REPOSITORY without a tag")
    if not DIGEST_RE.fullmatch(digest):
        raise UsageError(f"{digest!r}: expected sha256: and 64 lowercase hex digits")
    return name, new_name, digest


def set_image(overlay: Path, name: str, new_name: str, digest: str) -> Path:
    """overlay/kustomization.yaml の images の name の項目を newName・digest にする。"""
    path = overlay / "kustomization.yaml"
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.preserve_quotes = True
    yaml.width = 4096  # ダイジェストを折り返さない
    data = yaml.load(path.read_text(encoding="utf-8"))
    if not isinstance(data, CommentedMap):
        raise UsageError(f"{path}: not a kustomization")
    images = data.setdefault("images", CommentedSeq())
    # images の最後のキーに付いたコメント（続く空行やコメント）は、書き換えた後の最後のキーへ移す
    trailing = images[-1].ca.items.pop(list(images[-1])[-1], None) if images else None
    entry = next((i for i in images if i.get("name") == name), None)
    if entry is None:
        entry = CommentedMap(name=name)
        images.append(entry)
    entry.pop("newTag", None)
    entry["newName"] = new_name
    entry["digest"] = digest
    if trailing is not None:
        images[-1].ca.items[list(images[-1])[-1]] = trailing
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(data, out)
    return path


def main(argv: list[str] | None = None) -> int:
    """コマンドライン（誤りは終了コード 2 と 1 行の理由）。"""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digest-of", metavar="REGISTRY/REPO:TAG")
    parser.add_argument("overlay", nargs="?", type=Path)
    parser.add_argument("image", nargs="?", metavar="NAME=REGISTRY/REPO@sha256:DIGEST")
    args = parser.parse_args(argv)
    try:
        if args.digest_of:
            print(pick_repo_digest(args.digest_of, docker_repo_digests(args.digest_of)))
            return 0
        if args.overlay is None or args.image is None:
            raise UsageError("expected OVERLAY_DIR NAME=REGISTRY/REPO@sha256:DIGEST")
        name, new_name, digest = parse_assignment(args.image)
        path = set_image(args.overlay, name, new_name, digest)
    except UsageError as exc:
        print(f"k8s_set_image: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: {name} -> {new_name}@{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
