import Foundation

/// `GET /v1/datasets?q=`: a dataset matches when every word of the query appears, ignoring
/// case, in its name, owner, team, description or one of its field names.
public enum CatalogSearch {
    public static func matches(_ dataset: Dataset, query: String) -> Bool {
        let words = query.lowercased().split(whereSeparator: \.isWhitespace)
        guard !words.isEmpty else { return true }
        let haystack = ([dataset.name, dataset.metadata.owner ?? "", dataset.metadata.team ?? "", dataset.metadata.description ?? ""]
            + dataset.spec.schema.fields.map(\.name)).map { $0.lowercased() }
        return words.allSatisfy { word in haystack.contains { $0.contains(word) } }
    }
}

/// Who reads a dataset and where they write.
public struct DatasetLineage: Sendable, Equatable, Codable {
    public struct Reader: Sendable, Equatable, Codable {
        public var product: String
        public var team: String?
        /// `from` (its source) or `join`.
        public var reads: String
        /// Where it writes (no credentials).
        public var output: String?
        /// Who manages it: `gitops:<source>` for a git source's, whose spec is in git.
        public var managedBy: String?

        public init(product: String, team: String?, reads: String, output: String?, managedBy: String? = nil) {
            self.product = product
            self.team = team
            self.reads = reads
            self.output = output
            self.managedBy = managedBy
        }
    }

    /// The caller's team's products (every product for an admin).
    public var products: [Reader]
    /// How many more products of other teams read it; their names are theirs.
    public var otherTeams: Int

    public init(products: [Reader], otherTeams: Int) {
        self.products = products
        self.otherTeams = otherTeams
    }
}

/// One page of a list: the names after `continue` (exclusive), at most `limit` of them, and
/// the token of the next page (nil on the last). Tokens are opaque to clients.
public enum ListPage {
    public static let defaultLimit = 500
    public static let maximumLimit = 5000

    public static func slice<Item>(_ items: [Item], name: (Item) -> String, limit: Int?, after token: String?) -> (items: [Item], next: String?) {
        let limit = min(max(limit ?? defaultLimit, 1), maximumLimit)
        let start = token.flatMap(decode).map { last in items.firstIndex { name($0) > last } ?? items.count } ?? 0
        let page = Array(items[start..<min(start + limit, items.count)])
        let next = start + limit < items.count ? page.last.map { encode(name($0)) } : nil
        return (page, next)
    }

    private static func encode(_ name: String) -> String { Base64URL.encode(Array(name.utf8)) }

    private static func decode(_ token: String) -> String? {
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).flatMap { String(data: $0, encoding: .utf8) }
    }
}

/// Base64 with the URL-safe alphabet and no padding (RFC 4648 §5): list tokens, secrets.
public enum Base64URL {
    public static func encode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
