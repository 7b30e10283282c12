from modeldeck.cli import main

raise SystemExit(main())
