from k3py.cli.app import main

main()
