from edgead.cli import main

raise SystemExit(main())
