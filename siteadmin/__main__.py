"""``python -m siteadmin``."""

from siteadmin.cli import run

if __name__ == "__main__":
    run()
