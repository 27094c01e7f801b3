"""``python -m bench`` runs every benchmark with its defaults; extra arguments (e.g. --record) go to each."""

from __future__ import annotations

import sys

from bench import (
    api,
    build_feeds,
    import_bounces,
    import_posts,
    render_digests,
    send_digests,
    serve_feeds,
    sign_dkim,
    startup,
    subscribe,
)


def main() -> int:
    """Run each benchmark in turn; the exit status is the worst of theirs."""
    statuses: list[int] = [
        module.main(sys.argv[1:])
        for module in (
            import_posts,
            build_feeds,
            serve_feeds,
            render_digests,
            send_digests,
            import_bounces,
            subscribe,
            api,
            sign_dkim,
            startup,
        )
    ]
    return max(statuses)


if __name__ == "__main__":
    raise SystemExit(main())
