"""``python -m vtc_deploy`` is the ``vtc-deploy`` command."""

from vtc_deploy.cli import main

main()
