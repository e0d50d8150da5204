from embtool.cli import main

main()
