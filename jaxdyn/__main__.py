from jaxdyn.cli import main

raise SystemExit(main())
