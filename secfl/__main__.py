from secfl.cli import main

raise SystemExit(main())
