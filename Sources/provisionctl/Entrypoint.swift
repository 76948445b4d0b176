import ProvisionCommands

@main
struct Entrypoint {
    static func main() async {
        await ProvisionCommand.main()
    }
}
