#!/usr/bin/env python3
"""Make a single-layer container image tarball (docker-archive format, which `ctr images import`
and `docker load` both accept) without any daemon.

  mkimage.py OUT.tar NAME:TAG --file SRC[:DEST[:MODE]] ... [--dir ROOTFS] [--entrypoint JSON]
             [--cmd JSON] [--env K=V ...] [--workdir DIR] [--user UID]

--file adds one file (DEST defaults to /<basename>, MODE to 0755 for executables else 0644).
--dir adds a whole directory tree as the rootfs (e.g. a debootstrap minbase).
The layer is deterministic (mtime 0, uid/gid 0) so re-running gives the same image id.
"""
import argparse, hashlib, io, json, os, sys, tarfile


def add_parents(tf, path, seen):
    parts = path.strip("/").split("/")[:-1]
    cur = ""
    for p in parts:
        cur = f"{cur}/{p}" if cur else p
        if cur in seen:
            continue
        seen.add(cur)
        ti = tarfile.TarInfo(cur)
        ti.type = tarfile.DIRTYPE
        ti.mode = 0o755
        ti.mtime = 0
        tf.addfile(ti)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("ref")
    ap.add_argument("--file", action="append", default=[])
    ap.add_argument("--dir")
    ap.add_argument("--entrypoint")
    ap.add_argument("--cmd")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--workdir", default="/")
    ap.add_argument("--user", default="")
    a = ap.parse_args()

    layer = io.BytesIO()
    seen = set()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tf:
        if a.dir:
            def filt(ti):
                ti.mtime = 0
                return ti
            for name in sorted(os.listdir(a.dir)):
                tf.add(os.path.join(a.dir, name), arcname=name, filter=filt)
                seen.add(name)
        # always provide /tmp and /etc so runtimes can mount resolv.conf/hosts etc.
        for d in ("tmp", "etc", "var", "var/run", "dev", "proc", "sys"):
            if d not in seen and not (a.dir and os.path.lexists(os.path.join(a.dir, d))):
                add_parents(tf, d + "/x", seen)
        for spec in a.file:
            bits = spec.split(":")
            src = bits[0]
            dest = bits[1] if len(bits) > 1 and bits[1] else "/" + os.path.basename(src)
            st = os.stat(src)
            mode = int(bits[2], 8) if len(bits) > 2 else (0o755 if st.st_mode & 0o111 else 0o644)
            add_parents(tf, dest, seen)
            ti = tarfile.TarInfo(dest.lstrip("/"))
            ti.size = st.st_size
            ti.mode = mode
            ti.mtime = 0
            with open(src, "rb") as f:
                tf.addfile(ti, f)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()

    cfg = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env,
           "WorkingDir": a.workdir}
    if a.entrypoint:
        cfg["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd:
        cfg["Cmd"] = json.loads(a.cmd)
    if a.user:
        cfg["User"] = a.user
    config = {"architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
              "config": cfg, "rootfs": {"type": "layers", "diff_ids": [diff_id]},
              "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "mkimage.py"}]}
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id[7:] + "/layer.tar"
    ref = a.ref
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [layer_name]}]

    with tarfile.open(a.out, "w") as out:
        for name, data in ((config_name, config_bytes), (layer_name, layer_bytes),
                           ("manifest.json", json.dumps(manifest).encode())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            ti.mode = 0o644
            out.addfile(ti, io.BytesIO(data))
    print(f"{a.out}: {ref} layer {len(layer_bytes)} bytes, image id sha256:{config_name[:-5]}")


if __name__ == "__main__":
    sys.exit(main())
