import ProvisionSinks
import Testing

@Suite struct SinkDestinationPolicyTests {
    private func address(_ text: String) -> NetworkAddress { NetworkAddress(text)! }

    @Test func entriesAreHostsDomainsAddressesAndNetworks() throws {
        let entries = try SinkDestinationPolicy.parseEntries(["10.0.0.0/8, *.hooks.example", "DB.internal", "::1"])
        #expect(entries == [.network(address("10.0.0.0"), prefix: 8), .domain("hooks.example"), .host("db.internal"),
                            .network(address("::1"), prefix: 128)])
        for bad in ["10.0.0.0/33", "a b", "evil*.example", "300.1.1.1/8"] {
            #expect(throws: DestinationEntryInvalid.self, "\(bad)") { try SinkDestinationPolicy.parseEntries([bad]) }
        }
    }

    @Test func anAllowListAdmitsOnlyWhatItNames() throws {
        let policy = SinkDestinationPolicy(allowed: try SinkDestinationPolicy.parseEntries(["10.0.0.0/8", "*.hooks.example", "es.internal"]))
        func allowed(_ host: String, _ addresses: [String] = []) -> Bool {
            policy.refusal(host: host, port: 443, addresses: addresses.map(address), shownAs: host) == nil
        }
        #expect(allowed("10.1.2.3"))
        #expect(allowed("::ffff:10.0.0.1"))
        #expect(!allowed("11.0.0.1"))
        #expect(allowed("a.hooks.example"))
        #expect(!allowed("hooks.example") && !allowed("evilhooks.example"))
        #expect(allowed("ES.internal"))
        // A name inside the network only if every address it has is.
        #expect(allowed("db.corp", ["10.0.0.5"]))
        #expect(!allowed("db.corp", ["10.0.0.5", "8.8.8.8"]))
        #expect(!allowed("db.corp", []))
        // No list: anywhere.
        #expect(SinkDestinationPolicy().refusal(host: "8.8.8.8", port: 443, addresses: [], shownAs: "x") == nil)
    }

    @Test func theServersOwnPortIsNeverADestination() {
        let everywhere = SinkDestinationPolicy(serverPort: 8470)
        #expect(everywhere.refusal(host: "127.0.0.1", port: 8470, addresses: [], shownAs: "x")?.contains("own API") == true)
        #expect(everywhere.refusal(host: "localhost", port: 8470, addresses: [address("127.0.0.1")], shownAs: "x") != nil)
        #expect(everywhere.refusal(host: "[::1]", port: 8470, addresses: [], shownAs: "x") != nil)
        #expect(everywhere.refusal(host: "0.0.0.0", port: 8470, addresses: [], shownAs: "x") != nil)
        #expect(everywhere.refusal(host: "127.0.0.1", port: 8471, addresses: [], shownAs: "x") == nil)
        // Listening on one address: that one (and loopback when it is loopback), not others.
        let loopbackOnly = SinkDestinationPolicy(serverPort: 8470, serverAddresses: [address("127.0.0.1")])
        #expect(loopbackOnly.refusal(host: "127.0.0.2", port: 8470, addresses: [], shownAs: "x") != nil)
        #expect(loopbackOnly.refusal(host: "10.9.9.9", port: 8470, addresses: [], shownAs: "x") == nil)
    }
}
