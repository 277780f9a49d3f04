"""Exit 0 when the MySQL/MariaDB server of the MYSQL_* variables answers, 1 otherwise."""

import os
import sys

import MySQLdb


def main() -> int:
    host = os.environ.get("MYSQL_HOST", "127.0.0.1")
    port = int(os.environ.get("MYSQL_PORT", "3306"))
    try:
        MySQLdb.connect(
            host=host,
            port=port,
            user=os.environ.get("MYSQL_USERNAME", "root"),
            password=os.environ.get("MYSQL_PASSWORD", ""),
            connect_timeout=3,
        ).close()
    except MySQLdb.Error as exc:
        print(f"MySQL at {host}:{port} is not reachable: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
