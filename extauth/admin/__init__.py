"""The admin API (protos/extauth/admin/v1/admin.proto): what a running process has loaded, asked of that process.

`service.py` serves it on the listener `admin.listen` names; `client.py` is what `extauth status`, `explain
--live`, `reload` and `audit tail` call. `v1/` holds the stubs grpcio-tools generates (protos/README.md).
"""
