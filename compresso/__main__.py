"""`python -m compresso models|datasets|jobs ...`: the client commands without the server's dependencies."""

from compresso.cli import main

raise SystemExit(main())
