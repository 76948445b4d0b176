import Yams

/// Reads YAML documents into spec types, strictly: every unknown field, wrong type and
/// missing field becomes a `SpecError` located at the offending node.
struct DocumentReader {
    let file: String
    private(set) var errors: [SpecError] = []
    private var marks: [String: TextPosition] = [:]

    init(file: String) {
        self.file = file
    }

    /// A spec file is at most this long; specs are kilobytes.
    static let maximumFileBytes = 1 << 20
    /// Nodes in one document after aliases are expanded. Aliases are copies: a few hundred
    /// bytes of nested aliases expand to billions of nodes (the "billion laughs"), so
    /// `YAMLBudget` counts them from the parser's events before anything is composed.
    static let maximumNodes = 20_000
    /// Mappings and lists nest at most this deep (a schema's objects within objects). The
    /// YAML parser itself stops at 1,000 levels, so composing cannot exhaust the stack.
    static let maximumDepth = 32

    mutating func readAll(_ text: String) -> [ParsedDocument] {
        var documents: [ParsedDocument] = []
        guard text.utf8.count <= Self.maximumFileBytes else {
            errors.append(SpecError(file: file, line: 1, column: 1, path: "",
                                    message: "the file is \(text.utf8.count) bytes; a spec file may have at most \(Self.maximumFileBytes)"))
            return []
        }
        if let exceeded = YAMLBudget.check(text, maximumNodes: Self.maximumNodes, maximumDepth: Self.maximumDepth) {
            errors.append(SpecError(file: file, line: exceeded.line, column: exceeded.column, path: "", message: exceeded.message))
            return []
        }
        do {
            var sequence = try Yams.compose_all(yaml: text)
            while let node = sequence.next() {
                marks = [:]
                if let document = read(document: node) {
                    documents.append(ParsedDocument(document: document, file: file, marks: marks))
                }
            }
            if let error = sequence.error { report(yamlError: error) }
        } catch {
            report(yamlError: error)
        }
        return documents
    }

    private mutating func report(yamlError: Error) {
        switch yamlError as? YamlError {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
            .composer(_, let problem, let mark, _):
            errors.append(SpecError(file: file, line: mark.line, column: mark.column, path: "", message: "invalid YAML: \(problem)"))
        default:
            errors.append(SpecError(file: file, line: 1, column: 1, path: "", message: "invalid YAML: \(yamlError)"))
        }
    }

    // MARK: Errors

    private mutating func fail(_ node: Node?, _ path: String, _ message: String) {
        let mark = node?.position ?? TextPosition(line: 1, column: 1)
        errors.append(SpecError(file: file, line: mark.line, column: mark.column, path: path, message: message))
    }

    private func join(_ path: String, _ key: String) -> String {
        path.isEmpty ? key : "\(path).\(key)"
    }

    // MARK: Primitive readers

    /// A mapping's fields by key, in order. Reports unknown keys against `allowed`.
    private mutating func fields(of node: Node, at path: String, allowed: [String]) -> [String: Node]? {
        guard case .mapping(let mapping) = node else {
            fail(node, path, "expected a mapping, found \(describe(node))")
            return nil
        }
        var result: [String: Node] = [:]
        for (keyNode, valueNode) in mapping {
            // Keys are read as written: YAML 1.1 would turn a bare `on` into a boolean.
            guard case .scalar(let keyScalar) = keyNode else {
                fail(keyNode, path, "mapping keys must be plain strings")
                continue
            }
            let key = keyScalar.string
            let fieldPath = join(path, key)
            guard allowed.contains(key) else {
                var message = "unknown field '\(key)'"
                if let suggestion = closestMatch(to: key, among: allowed) { message += " (did you mean '\(suggestion)'?)" }
                fail(keyNode, fieldPath, message)
                continue
            }
            if result[key] != nil {
                fail(keyNode, fieldPath, "field '\(key)' appears twice")
                continue
            }
            result[key] = valueNode
            marks[fieldPath] = valueNode.position
        }
        return result
    }

    private mutating func required(_ fields: [String: Node], _ key: String, in node: Node, at path: String) -> Node? {
        guard let value = fields[key] else {
            fail(node, join(path, key), "missing required field '\(key)'")
            return nil
        }
        return value
    }

    private mutating func string(_ node: Node?, at path: String) -> String? {
        guard let node else { return nil }
        guard case .scalar(let scalar) = node, !(scalar.style == .plain && (scalar.string == "~" || scalar.string == "null" || scalar.string.isEmpty)) else {
            fail(node, path, "expected a string, found \(describe(node))")
            return nil
        }
        return scalar.string
    }

    private mutating func describe(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        case .scalar(let scalar):
            if scalar.style == .plain && (scalar.string == "~" || scalar.string == "null" || scalar.string.isEmpty) {
                return "null"
            }
            return "'\(scalar.string)'"
        }
    }

    private mutating func name(_ node: Node?, at path: String, what: String) -> String? {
        guard let text = string(node, at: path) else { return nil }
        let valid = !text.isEmpty && text.count <= 63
            && text.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" }
            && text.first != "-" && text.last != "-"
        guard valid else {
            fail(node, path, "\(what) '\(text)' must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit")
            return nil
        }
        return text
    }

    /// Table and schema names: lowercase, so that they need no quoting in the reader's SQL.
    private mutating func sqlIdentifier(_ node: Node?, at path: String) -> String? {
        guard let text = string(node, at: path) else { return nil }
        guard let first = text.first, first == "_" || (first.isASCII && first.isLowercase), text.count <= 63,
            text.allSatisfy({ $0 == "_" || ($0.isASCII && ($0.isLowercase || $0.isNumber)) })
        else {
            fail(node, path, "'\(text)' must be 1-63 lowercase letters, digits or '_', not starting with a digit")
            return nil
        }
        return text
    }

    private mutating func positiveInteger(_ node: Node, at path: String, max: Int) -> Int? {
        guard let text = string(node, at: path) else { return nil }
        guard let value = Int(text), value > 0, value <= max else {
            fail(node, path, "'\(text)' is not a whole number from 1 to \(max)")
            return nil
        }
        return value
    }

    /// `512`, `64KiB`, `1MiB`: a size in bytes, at most `max`.
    private mutating func byteSize(_ node: Node, at path: String, max: Int) -> Int? {
        guard let text = string(node, at: path) else { return nil }
        let units: [(String, Int)] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1), ("", 1)]
        for (unit, factor) in units where text.hasSuffix(unit) {
            guard let value = Int(text.dropLast(unit.count)), value > 0 else { break }
            let (bytes, overflow) = value.multipliedReportingOverflow(by: factor)
            guard !overflow, bytes <= max else {
                fail(node, path, "'\(text)' is more than the limit of \(max >> 20)MiB")
                return nil
            }
            return bytes
        }
        fail(node, path, "'\(text)' is not a size (examples: 65536, 64KiB, 1MiB)")
        return nil
    }

    /// Timers (timeouts, linger, backoff) wait at most a week: a longer wait is a typo, and a
    /// sleep of thousands of years does not fit a clock's nanoseconds.
    private static let longestTimer: Int64 = 7 * 86_400_000

    private mutating func duration(_ node: Node, at path: String, allowZero: Bool = false,
                                   max: Int64 = longestTimer) -> Int64? {
        guard let text = string(node, at: path) else { return nil }
        guard let value = DurationText.parseMilliseconds(text), value > 0 || (allowZero && value == 0) else {
            fail(node, path, DurationText.problem(with: text, examples: "50ms, 10s, 2m"))
            return nil
        }
        guard value <= max else {
            fail(node, path, "'\(text)' is longer than the limit of \(DurationText.format(milliseconds: max))")
            return nil
        }
        return value
    }

    /// One of an enumeration's raw values, or `fallback` when the field is absent.
    private mutating func option<Option: RawRepresentable & CaseIterable>(_ node: Node?, at path: String, what: String,
                                                                          default fallback: Option) -> Option?
        where Option.RawValue == String
    {
        guard let node else { return fallback }
        guard let text = string(node, at: path) else { return nil }
        guard let value = Option(rawValue: text) else {
            let choices = Option.allCases.map { "'\($0.rawValue)'" }
            fail(node, path, "unknown \(what) '\(text)' (expected \(choices.dropLast().joined(separator: ", ")) or \(choices.last!))")
            return nil
        }
        return value
    }

    private mutating func identifier(_ node: Node?, at path: String) -> String? {
        guard let text = string(node, at: path) else { return nil }
        guard let first = text.first, first == "_" || first.isLetter,
            text.allSatisfy({ $0 == "_" || $0.isLetter || $0.isNumber })
        else {
            fail(node, path, "'\(text)' is not a valid field name (letters, digits and '_', not starting with a digit)")
            return nil
        }
        return text
    }

    // MARK: Documents

    private mutating func read(document node: Node) -> SpecDocument? {
        let errorCount = errors.count
        guard let top = fields(of: node, at: "", allowed: ["apiVersion", "kind", "metadata", "spec"]) else { return nil }
        let location = SourceLocation(file: file, line: node.mark?.line ?? 1, column: node.mark?.column ?? 1)
        if let apiVersionNode = required(top, "apiVersion", in: node, at: ""), let apiVersion = string(apiVersionNode, at: "apiVersion"),
            apiVersion != "provision/v1"
        {
            fail(apiVersionNode, "apiVersion", "unsupported apiVersion '\(apiVersion)' (expected 'provision/v1')")
        }
        guard let kindNode = required(top, "kind", in: node, at: ""), let kindText = string(kindNode, at: "kind") else { return nil }
        guard let kind = SpecKind(rawValue: kindText) else {
            var message = "unknown kind '\(kindText)'"
            if let suggestion = closestMatch(to: kindText, among: SpecKind.allCases.map(\.rawValue)) {
                message += " (did you mean '\(suggestion)'?)"
            }
            fail(kindNode, "kind", message)
            return nil
        }
        let metadata = required(top, "metadata", in: node, at: "").flatMap { readMetadata($0) }
        let specNode = required(top, "spec", in: node, at: "")
        switch kind {
        case .dataset:
            guard let specNode, let spec = readDatasetSpec(specNode, name: metadata?.name), let metadata,
                errors.count == errorCount
            else { return nil }
            return .dataset(Dataset(metadata: metadata, spec: spec), location)
        case .dataProduct:
            guard let specNode, let spec = readProductSpec(specNode), let metadata, errors.count == errorCount else { return nil }
            return .dataProduct(DataProduct(metadata: metadata, spec: spec), location)
        case .gitSource:
            guard let specNode, let spec = readGitSourceSpec(specNode), let metadata, errors.count == errorCount else { return nil }
            return .gitSource(GitSource(metadata: metadata, spec: spec), location)
        }
    }

    private mutating func readGitSourceSpec(_ node: Node) -> GitSourceSpec? {
        guard let fields = fields(of: node, at: "spec", allowed: ["url", "ref", "path", "interval", "driftPolicy", "pruneLimit", "credentials"]),
            let urlNode = required(fields, "url", in: node, at: "spec"), let url = string(urlNode, at: "spec.url")
        else { return nil }
        guard !url.hasPrefix("-"), !url.contains(where: { $0.isNewline || $0 == "\0" }) else {
            fail(urlNode, "spec.url", "'\(url)' is not a repository URL or path")
            return nil
        }
        if PostgresURL.redact(url) != url || SecretInText.queryCredential(in: url) != nil {
            fail(urlNode, "spec.url", "credentials do not belong in a spec; use spec.credentials with '${secret:NAME}'")
            return nil
        }
        var spec = GitSourceSpec(url: url)
        if let refNode = fields["ref"] {
            guard let ref = string(refNode, at: "spec.ref") else { return nil }
            guard !ref.hasPrefix("-"), !ref.contains(where: { $0.isWhitespace || $0 == "\0" || $0 == ":" }) else {
                fail(refNode, "spec.ref", "'\(ref)' is not a branch, tag or commit")
                return nil
            }
            spec.ref = ref
        }
        if let pathNode = fields["path"] {
            guard let path = string(pathNode, at: "spec.path") else { return nil }
            let trimmed = path.split(separator: "/").filter { $0 != "." }
            guard !path.hasPrefix("/"), !trimmed.contains("..") else {
                fail(pathNode, "spec.path", "'\(path)' must be a directory inside the repository")
                return nil
            }
            spec.path = trimmed.joined(separator: "/")
        }
        if let intervalNode = fields["interval"] {
            guard let interval = duration(intervalNode, at: "spec.interval") else { return nil }
            guard interval >= 1000 else {
                fail(intervalNode, "spec.interval", "a git source is fetched at most once a second")
                return nil
            }
            spec.intervalMilliseconds = interval
        }
        guard let drift = option(fields["driftPolicy"], at: "spec.driftPolicy", what: "drift policy", default: GitSourceSpec.DriftPolicy.revert)
        else { return nil }
        spec.driftPolicy = drift
        if let limitNode = fields["pruneLimit"] {
            guard let text = string(limitNode, at: "spec.pruneLimit") else { return nil }
            guard text.hasSuffix("%"), let percent = Int(text.dropLast()), (0...100).contains(percent) else {
                fail(limitNode, "spec.pruneLimit", "'\(text)' is not a share of the source's products (examples: 50%, 100%)")
                return nil
            }
            spec.pruneLimitPercent = percent
        }
        if let credentialsNode = fields["credentials"] {
            guard let credentials = self.fields(of: credentialsNode, at: "spec.credentials", allowed: ["username", "password"]) else { return nil }
            for (key, valueNode) in credentials {
                let path = "spec.credentials.\(key)"
                guard let value = string(valueNode, at: path) else { return nil }
                guard ValueReference.parse(value) != nil else {
                    fail(valueNode, path, "credentials do not belong in a spec; use '${secret:NAME}'")
                    return nil
                }
                marks[path] = valueNode.position
                if key == "username" { spec.username = value } else { spec.password = value }
            }
            guard spec.password != nil else {
                fail(credentialsNode, "spec.credentials", "credentials need a password (or a token, as the password)")
                return nil
            }
        }
        return spec
    }

    private mutating func readMetadata(_ node: Node) -> ObjectMetadata? {
        guard let fields = fields(of: node, at: "metadata", allowed: ["name", "team", "owner", "description", "labels", "annotations", "resourceVersion"]) else {
            return nil
        }
        guard let name = name(required(fields, "name", in: node, at: "metadata"), at: "metadata.name", what: "name") else {
            return nil
        }
        let labels = fields["labels"].flatMap { stringMap($0, at: "metadata.labels") }
        let annotations = fields["annotations"].flatMap { stringMap($0, at: "metadata.annotations") }
        if let prune = annotations?[ObjectMetadata.pruneAnnotation], prune != "disabled", prune != "enabled" {
            fail(fields["annotations"], "metadata.annotations.\(ObjectMetadata.pruneAnnotation)", "expected 'disabled' or 'enabled', found '\(prune)'")
        }
        return ObjectMetadata(
            name: name,
            team: fields["team"].flatMap { string($0, at: "metadata.team") },
            owner: fields["owner"].flatMap { string($0, at: "metadata.owner") },
            description: fields["description"].flatMap { string($0, at: "metadata.description") },
            labels: labels,
            annotations: annotations,
            resourceVersion: fields["resourceVersion"].flatMap { resourceVersion($0) })
    }

    private mutating func stringMap(_ node: Node, at path: String) -> [String: String]? {
        guard case .mapping(let mapping) = node else {
            fail(node, path, "expected a mapping, found \(describe(node))")
            return nil
        }
        var result: [String: String] = [:]
        for (key, value) in mapping {
            if let key = string(key, at: path), let value = string(value, at: "\(path).\(key)") { result[key] = value }
        }
        return result
    }

    /// A version as the server reported it: digits (YAML may read them as a number).
    private mutating func resourceVersion(_ node: Node) -> String? {
        guard let text = string(node, at: "metadata.resourceVersion") else { return nil }
        guard !text.isEmpty, text.count <= 20, text.allSatisfy({ $0.isASCII && $0.isNumber }), UInt64(text) != nil else {
            fail(node, "metadata.resourceVersion", "expected the resourceVersion the server reported (digits), found '\(text)'")
            return nil
        }
        return text
    }

    private mutating func readDatasetSpec(_ node: Node, name: String?) -> DatasetSpec? {
        guard let fields = fields(of: node, at: "spec", allowed: ["topic", "key", "time", "schema", "partitions", "compacted"]) else { return nil }
        guard let schemaNode = required(fields, "schema", in: node, at: "spec"),
            let schema = readSchema(schemaNode, at: "spec.schema")
        else { return nil }
        let topic = fields["topic"].flatMap { self.topic($0) } ?? name ?? ""
        var key: String?
        if let keyNode = fields["key"], let keyName = identifier(keyNode, at: "spec.key") {
            if schema.field(named: keyName) == nil {
                fail(keyNode, "spec.key", unknownFieldMessage(keyName, in: schema, dataset: name))
            } else {
                key = keyName
            }
        }
        var time: String?
        if let timeNode = fields["time"], let timeName = identifier(timeNode, at: "spec.time") {
            if let field = schema.field(named: timeName) {
                if field.type == .timestamp {
                    time = timeName
                } else {
                    fail(timeNode, "spec.time", "the time field '\(timeName)' is a \(field.type.name); it must be a timestamp")
                }
            } else {
                fail(timeNode, "spec.time", unknownFieldMessage(timeName, in: schema, dataset: name))
            }
        }
        var partitions: Int?
        if let partitionsNode = fields["partitions"] {
            guard let count = positiveInteger(partitionsNode, at: "spec.partitions", max: DatasetSpec.partitionsMax) else { return nil }
            partitions = count
        }
        var compacted: Bool?
        if let compactedNode = fields["compacted"] {
            guard case .scalar(let scalar) = compactedNode, ["true", "false"].contains(scalar.string) else {
                fail(compactedNode, "spec.compacted", "expected true or false")
                return nil
            }
            compacted = scalar.string == "true"
            if compacted == true, fields["key"] == nil {
                fail(compactedNode, "spec.compacted", "a compacted topic keeps each key's latest record: the dataset needs a key (spec.key)")
            }
        }
        return DatasetSpec(topic: topic, key: key, time: time, schema: schema, partitions: partitions, compacted: compacted)
    }

    private mutating func topic(_ node: Node) -> String? {
        guard let text = string(node, at: "spec.topic") else { return nil }
        guard !text.isEmpty, text.count <= 200, !text.hasPrefix("_"), !text.hasPrefix("."),
            text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-") })
        else {
            fail(node, "spec.topic", "topic '\(text)' must be letters, digits, '.', '_' or '-' and must not start with '_' or '.'")
            return nil
        }
        return text
    }

    private func unknownFieldMessage(_ name: String, in schema: Schema, dataset: String?) -> String {
        var message = "unknown field '\(name)' in dataset '\(dataset ?? "?")'"
        if let suggestion = closestMatch(to: name, among: schema.fieldNames) { message += " (did you mean '\(suggestion)'?)" }
        return message
    }

    private mutating func readSchema(_ node: Node, at path: String) -> Schema? {
        guard case .mapping(let mapping) = node else {
            fail(node, path, "expected a mapping of field names to types, found \(describe(node))")
            return nil
        }
        if mapping.count == 0 {
            fail(node, path, "a schema needs at least one field")
            return nil
        }
        var schema = Schema()
        var ok = true
        for (keyNode, valueNode) in mapping {
            guard let fieldName = identifier(keyNode, at: path) else {
                ok = false
                continue
            }
            let fieldPath = join(path, fieldName)
            if schema.field(named: fieldName) != nil {
                fail(keyNode, fieldPath, "field '\(fieldName)' appears twice")
                ok = false
                continue
            }
            // `{type: string, pii: true}` describes one field; any other mapping is an object's
            // fields (a field named `pii` of type `true` does not exist, so this is unambiguous).
            if case .mapping(let descriptor) = valueNode, descriptor.keys.contains(where: { $0.string == "pii" }) {
                guard let field = readFieldDescriptor(valueNode, named: fieldName, at: fieldPath) else {
                    ok = false
                    continue
                }
                schema.fields.append(field)
                continue
            }
            if case .mapping = valueNode {
                guard let nested = readSchema(valueNode, at: fieldPath) else {
                    ok = false
                    continue
                }
                schema.fields.append(.init(name: fieldName, type: .object(nested)))
                continue
            }
            guard let type = fieldType(valueNode, at: fieldPath) else {
                ok = false
                continue
            }
            schema.fields.append(.init(name: fieldName, type: type))
        }
        return ok ? schema : nil
    }

    /// `{type: T, pii: true|false}`, where T is a type name or a mapping of an object's fields.
    private mutating func readFieldDescriptor(_ node: Node, named name: String, at path: String) -> Schema.Field? {
        guard let fields = fields(of: node, at: path, allowed: ["type", "pii"]),
            let typeNode = required(fields, "type", in: node, at: path), let piiNode = fields["pii"]
        else { return nil }
        guard case .scalar(let scalar) = piiNode, let pii = Bool(scalar.string) else {
            fail(piiNode, join(path, "pii"), "expected true or false")
            return nil
        }
        if case .mapping = typeNode {
            guard let nested = readSchema(typeNode, at: join(path, "type")) else { return nil }
            return Schema.Field(name: name, type: .object(nested), pii: pii)
        }
        guard let type = fieldType(typeNode, at: join(path, "type")) else { return nil }
        return Schema.Field(name: name, type: type, pii: pii)
    }

    /// A scalar field type by its name, or a located error naming the types.
    private mutating func fieldType(_ node: Node, at path: String) -> ValueType? {
        guard let typeName = string(node, at: path) else { return nil }
        guard let type = ValueType.named(typeName) else {
            var message = "unknown type '\(typeName)' (types: \(ValueType.schemaTypeNames.joined(separator: ", ")))"
            if let suggestion = closestMatch(to: typeName, among: ValueType.schemaTypeNames) {
                message = "unknown type '\(typeName)' (did you mean '\(suggestion)'?)"
            }
            fail(node, path, message)
            return nil
        }
        return type
    }

    private mutating func readProductSpec(_ node: Node) -> DataProductSpec? {
        let allowed = ["from", "backfill", "where", "select", "key", "sink", "deletionPolicy", "join"]
        guard let fields = fields(of: node, at: "spec", allowed: allowed) else { return nil }
        let joins = fields["join"].map { readJoins($0) } ?? []
        let from = name(required(fields, "from", in: node, at: "spec"), at: "spec.from", what: "dataset name")
        let backfill = fields["backfill"].map { readBackfill($0) } ?? .all
        let filter = fields["where"].flatMap { expressionText($0, at: "spec.where") }
        var select: [SelectField]?
        if let selectNode = fields["select"] {
            select = readSelect(selectNode)
        }
        let key = fields["key"].flatMap { identifier($0, at: "spec.key") }
        let sink = required(fields, "sink", in: node, at: "spec").flatMap { readSink($0) }
        var deletionPolicy = DeletionPolicy.retain
        if let policyNode = fields["deletionPolicy"], let text = string(policyNode, at: "spec.deletionPolicy") {
            if let policy = DeletionPolicy(rawValue: text) {
                deletionPolicy = policy
            } else {
                fail(policyNode, "spec.deletionPolicy", "unknown deletionPolicy '\(text)' (expected 'Retain' or 'Delete')")
            }
        }
        guard let from, let backfill, let sink, let joins else { return nil }
        return DataProductSpec(from: from, backfill: backfill, filter: filter, select: select, key: key, sink: sink,
                               deletionPolicy: deletionPolicy, joins: joins)
    }

    private mutating func readJoins(_ node: Node) -> [JoinSpec]? {
        guard case .sequence(let sequence) = node, !sequence.isEmpty else {
            fail(node, "spec.join", "expected a list of joins ({dataset, on, as}), found \(describe(node))")
            return nil
        }
        var joins: [JoinSpec] = []
        var ok = true
        for (index, joinNode) in sequence.enumerated() {
            let path = "spec.join[\(index)]"
            marks[path] = joinNode.position
            guard let join = readJoin(joinNode, at: path) else {
                ok = false
                continue
            }
            if let earlier = joins.first(where: { $0.alias == join.alias }) {
                fail(joinNode, "\(path).as", "'\(earlier.alias)' names two joins; each join needs its own 'as'")
                ok = false
            }
            joins.append(join)
        }
        return ok ? joins : nil
    }

    private mutating func readJoin(_ node: Node, at path: String) -> JoinSpec? {
        let allowed = ["dataset", "on", "as", "type", "mode", "within", "maxDelay", "idleTimeout"]
        guard let fields = fields(of: node, at: path, allowed: allowed) else { return nil }
        let dataset = name(required(fields, "dataset", in: node, at: path), at: "\(path).dataset", what: "dataset name")
        let on = identifier(required(fields, "on", in: node, at: path), at: "\(path).on")
        let alias = identifier(required(fields, "as", in: node, at: path), at: "\(path).as")
        guard let kind = option(fields["type"], at: "\(path).type", what: "join type", default: JoinSpec.Kind.left),
              let mode = option(fields["mode"], at: "\(path).mode", what: "join mode", default: JoinSpec.Mode.asOf)
        else { return nil }
        var within: Int64?
        if let withinNode = fields["within"] {
            guard let value = duration(withinNode, at: "\(path).within", max: DurationText.maximumMilliseconds) else { return nil }
            if let modeNode = fields["mode"] {
                fail(modeNode, "\(path).mode", "a windowed join ('within') joins events, not table rows; it takes no mode")
                return nil
            }
            within = value
        }
        var maxDelay = JoinSpec.defaultMaxDelayMilliseconds
        if let delayNode = fields["maxDelay"] {
            guard let value = duration(delayNode, at: "\(path).maxDelay", allowZero: true) else { return nil }
            maxDelay = value
        }
        var idleTimeout: Int64?
        if let idleNode = fields["idleTimeout"] {
            guard within != nil else {
                fail(idleNode, "\(path).idleTimeout", "idleTimeout belongs to a windowed join ('within'); a table join waits 'maxDelay'")
                return nil
            }
            guard let value = duration(idleNode, at: "\(path).idleTimeout") else { return nil }
            idleTimeout = value
        }
        guard let dataset, let on, let alias else { return nil }
        return JoinSpec(dataset: dataset, on: on, alias: alias, kind: kind, mode: mode, withinMilliseconds: within,
                        maxDelayMilliseconds: maxDelay, idleTimeoutMilliseconds: idleTimeout)
    }

    /// Expressions are scalars; a YAML number or boolean is read as its text (`select: {one: 1}`).
    private mutating func expressionText(_ node: Node, at path: String) -> String? {
        guard case .scalar(let scalar) = node, !scalar.string.isEmpty else {
            fail(node, path, "expected an expression, found \(describe(node))")
            return nil
        }
        marks["style:" + path] = TextPosition(line: 0, column: scalar.style == .plain ? 0 : 1)
        return scalar.string
    }

    private mutating func readSelect(_ node: Node) -> [SelectField]? {
        guard case .mapping(let mapping) = node else {
            fail(node, "spec.select", "expected a mapping of output field names to expressions, found \(describe(node))")
            return nil
        }
        if mapping.count == 0 {
            fail(node, "spec.select", "select needs at least one field")
            return nil
        }
        var select: [SelectField] = []
        for (keyNode, valueNode) in mapping {
            guard let fieldName = identifier(keyNode, at: "spec.select") else { continue }
            let path = "spec.select.\(fieldName)"
            if select.contains(where: { $0.name == fieldName }) {
                fail(keyNode, path, "output field '\(fieldName)' appears twice")
                continue
            }
            marks[path] = valueNode.position
            if let expression = expressionText(valueNode, at: path) {
                select.append(SelectField(name: fieldName, expression: expression))
            }
        }
        return select
    }

    private mutating func readBackfill(_ node: Node) -> Backfill? {
        if case .scalar(let scalar) = node {
            switch scalar.string {
            case "all": return .all
            case "none": return Backfill.none
            default:
                fail(node, "spec.backfill", "expected 'all', 'none', {since: DURATION} or {from: TIMESTAMP, until: TIMESTAMP}")
                return nil
            }
        }
        guard let fields = fields(of: node, at: "spec.backfill", allowed: ["since", "from", "until"]) else { return nil }
        if let sinceNode = fields["since"] {
            if fields["from"] != nil || fields["until"] != nil {
                fail(sinceNode, "spec.backfill.since", "use either 'since' or 'from'/'until', not both")
                return nil
            }
            guard let text = string(sinceNode, at: "spec.backfill.since") else { return nil }
            guard let milliseconds = DurationText.parseMilliseconds(text), milliseconds > 0 else {
                fail(sinceNode, "spec.backfill.since", DurationText.problem(with: text, examples: "90d, 12h, 30m"))
                return nil
            }
            return .since(text: text, milliseconds: milliseconds)
        }
        guard let fromNode = fields["from"] else {
            fail(node, "spec.backfill", "backfill needs 'since' or 'from'")
            return nil
        }
        guard let fromText = string(fromNode, at: "spec.backfill.from") else { return nil }
        guard let from = Timestamp.parse(fromText) else {
            fail(fromNode, "spec.backfill.from", "'\(fromText)' is not an RFC 3339 timestamp")
            return nil
        }
        var until: TimestampMilliseconds?
        if let untilNode = fields["until"], let untilText = string(untilNode, at: "spec.backfill.until") {
            guard let parsed = Timestamp.parse(untilText) else {
                fail(untilNode, "spec.backfill.until", "'\(untilText)' is not an RFC 3339 timestamp")
                return nil
            }
            guard parsed > from else {
                fail(untilNode, "spec.backfill.until", "'until' must be after 'from'")
                return nil
            }
            until = parsed
        }
        return .window(from: from, until: until)
    }

    private mutating func readSink(_ node: Node) -> SinkSpec? {
        let known = SinkSpec.kinds + ["elasticsearch", "webhook"]
        if case .mapping(let mapping) = node {
            var unknown = false
            for (keyNode, _) in mapping {
                guard case .scalar(let key) = keyNode, !known.contains(key.string) else { continue }
                fail(keyNode, "spec.sink.\(key.string)", "unknown sink '\(key.string)' (supported: \(SinkSpec.kinds.joined(separator: ", ")))")
                unknown = true
            }
            if unknown { return nil }
        }
        guard let fields = fields(of: node, at: "spec.sink", allowed: known) else { return nil }
        guard fields.count == 1, let (kind, sinkNode) = fields.first else {
            fail(node, "spec.sink", fields.isEmpty ? "a sink needs one kind: \(SinkSpec.kinds.joined(separator: ", "))"
                : "a sink has exactly one kind, found \(fields.keys.sorted().joined(separator: ", "))")
            return nil
        }
        switch kind {
        case "file":
            guard let fileFields = self.fields(of: sinkNode, at: "spec.sink.file", allowed: ["path", "format"]) else {
                return nil
            }
            guard let pathNode = required(fileFields, "path", in: sinkNode, at: "spec.sink.file"),
                let path = string(pathNode, at: "spec.sink.file.path")
            else { return nil }
            guard FilePaths.normalizedRelativePath(path) != nil else {
                fail(pathNode, "spec.sink.file.path", "path '\(path)' must be relative and stay inside the server's file root")
                return nil
            }
            var format: FileSinkSpec.Format = path.lowercased().hasSuffix(".csv") ? .csv : .jsonl
            if let formatNode = fileFields["format"], let text = string(formatNode, at: "spec.sink.file.format") {
                guard let parsed = FileSinkSpec.Format(rawValue: text) else {
                    fail(formatNode, "spec.sink.file.format", "unknown format '\(text)' (expected 'jsonl' or 'csv')")
                    return nil
                }
                format = parsed
            }
            return .file(FileSinkSpec(path: path, format: format))
        case "postgres":
            guard let postgresFields = self.fields(of: sinkNode, at: "spec.sink.postgres", allowed: ["url", "table", "schema"]) else {
                return nil
            }
            guard let urlNode = required(postgresFields, "url", in: sinkNode, at: "spec.sink.postgres"),
                let url = string(urlNode, at: "spec.sink.postgres.url"),
                let tableNode = required(postgresFields, "table", in: sinkNode, at: "spec.sink.postgres"),
                let table = sqlIdentifier(tableNode, at: "spec.sink.postgres.table")
            else { return nil }
            let isReference = ValueReference.parse(url) != nil
            guard isReference || PostgresURL.parse(url) != nil else {
                fail(urlNode, "spec.sink.postgres.url", "expected '${secret:NAME}', '${env:NAME}' or a postgres:// URL")
                return nil
            }
            if !isReference, PostgresURL.parse(url)?.password != nil || SecretInText.queryCredential(in: url) != nil {
                fail(urlNode, "spec.sink.postgres.url", "a password does not belong in a spec; use '${secret:NAME}'")
                return nil
            }
            var schema = "public"
            if let schemaNode = postgresFields["schema"] {
                guard let parsed = sqlIdentifier(schemaNode, at: "spec.sink.postgres.schema") else { return nil }
                schema = parsed
            }
            return .postgres(PostgresSinkSpec(url: url, table: table, schema: schema))
        case "elasticsearch":
            let path = "spec.sink.elasticsearch"
            guard let esFields = self.fields(of: sinkNode, at: path, allowed: ["url", "index", "auth", "text"]),
                let urlNode = required(esFields, "url", in: sinkNode, at: path),
                let url = string(urlNode, at: "\(path).url"),
                let indexNode = required(esFields, "index", in: sinkNode, at: path),
                let index = string(indexNode, at: "\(path).index")
            else { return nil }
            let isReference = ValueReference.parse(url) != nil
            guard isReference || url.hasPrefix("http://") || url.hasPrefix("https://") else {
                fail(urlNode, "\(path).url", "expected '${secret:NAME}', '${env:NAME}' or an http:// or https:// URL")
                return nil
            }
            if !isReference, PostgresURL.redact(url) != url || SecretInText.queryCredential(in: url) != nil {
                fail(urlNode, "\(path).url", "a password does not belong in a spec; use auth with '${secret:NAME}'")
                return nil
            }
            guard let first = index.first, first.isASCII, first.isLowercase || first.isNumber, index.utf8.count <= 200,
                index.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_") })
            else {
                fail(indexNode, "\(path).index",
                     "'\(index)' must be lowercase letters, digits, '-' or '_', start with a letter or digit, at most 200 bytes")
                return nil
            }
            var auth: ElasticsearchSinkSpec.Auth?
            if let authNode = esFields["auth"] {
                guard let authFields = self.fields(of: authNode, at: "\(path).auth", allowed: ["basic", "apiKey"]) else { return nil }
                guard authFields.count == 1, let (kind, valueNode) = authFields.first,
                    let reference = string(valueNode, at: "\(path).auth.\(kind)")
                else {
                    fail(authNode, "\(path).auth", "auth takes exactly one of basic, apiKey")
                    return nil
                }
                guard ValueReference.parse(reference) != nil else {
                    fail(valueNode, "\(path).auth.\(kind)", "credentials do not belong in a spec; use '${secret:NAME}'")
                    return nil
                }
                marks["\(path).auth.\(kind)"] = valueNode.position
                auth = kind == "basic" ? .basic(reference) : .apiKey(reference)
            }
            var text: [String] = []
            if let textNode = esFields["text"] {
                guard case .sequence(let items) = textNode else {
                    fail(textNode, "\(path).text", "expected a list of output fields")
                    return nil
                }
                for item in items {
                    guard let name = identifier(item, at: "\(path).text") else { return nil }
                    text.append(name)
                }
            }
            return .elasticsearch(ElasticsearchSinkSpec(url: url, index: index, auth: auth, text: text))
        case "webhook":
            let path = "spec.sink.webhook"
            guard let hookFields = self.fields(of: sinkNode, at: path, allowed: ["url", "batch", "timeout", "retry", "secret", "headers", "signing", "format"]),
                let urlNode = required(hookFields, "url", in: sinkNode, at: path),
                let url = string(urlNode, at: "\(path).url")
            else { return nil }
            guard ValueReference.parse(url) != nil || url.hasPrefix("http://") || url.hasPrefix("https://") else {
                fail(urlNode, "\(path).url", "expected '${secret:NAME}', '${env:NAME}' or an http:// or https:// URL")
                return nil
            }
            if ValueReference.parse(url) == nil, PostgresURL.redact(url) != url || SecretInText.queryCredential(in: url) != nil {
                fail(urlNode, "\(path).url", "a password does not belong in a spec; use '${secret:NAME}'")
                return nil
            }
            var spec = WebhookSinkSpec(url: url)
            if let batchNode = hookFields["batch"] {
                guard let batchFields = self.fields(of: batchNode, at: "\(path).batch", allowed: ["maxRecords", "maxBytes", "linger"]) else {
                    return nil
                }
                if let node = batchFields["maxRecords"] {
                    guard let value = positiveInteger(node, at: "\(path).batch.maxRecords", max: 100_000) else { return nil }
                    spec.batch.maxRecords = value
                }
                if let node = batchFields["maxBytes"] {
                    guard let value = byteSize(node, at: "\(path).batch.maxBytes", max: 256 << 20) else { return nil }
                    spec.batch.maxBytes = value
                }
                if let node = batchFields["linger"] {
                    guard let value = duration(node, at: "\(path).batch.linger", allowZero: true) else { return nil }
                    spec.batch.lingerMilliseconds = value
                }
            }
            if let node = hookFields["timeout"] {
                guard let value = duration(node, at: "\(path).timeout") else { return nil }
                spec.timeoutMilliseconds = value
            }
            if let retryNode = hookFields["retry"] {
                guard let retryFields = self.fields(of: retryNode, at: "\(path).retry",
                                                    allowed: ["maxAttempts", "initialBackoff", "maxBackoff", "unavailableAfter"])
                else { return nil }
                if let node = retryFields["maxAttempts"] {
                    guard let value = positiveInteger(node, at: "\(path).retry.maxAttempts", max: 1000) else { return nil }
                    spec.retry.maxAttempts = value
                }
                if let node = retryFields["initialBackoff"] {
                    guard let value = duration(node, at: "\(path).retry.initialBackoff") else { return nil }
                    spec.retry.initialBackoffMilliseconds = value
                }
                if let node = retryFields["maxBackoff"] {
                    guard let value = duration(node, at: "\(path).retry.maxBackoff") else { return nil }
                    spec.retry.maxBackoffMilliseconds = value
                }
                if let node = retryFields["unavailableAfter"] {
                    guard let value = duration(node, at: "\(path).retry.unavailableAfter") else { return nil }
                    spec.retry.unavailableAfterMilliseconds = value
                }
            }
            if let secretNode = hookFields["secret"] {
                // One secret, or two while receivers move from the second to the first.
                var nodes = [secretNode]
                if case .sequence(let items) = secretNode {
                    guard (1...2).contains(items.count) else {
                        fail(secretNode, "\(path).secret", "expected one secret, or two while receivers move to the first: [NEW, OLD]")
                        return nil
                    }
                    nodes = Array(items)
                }
                var secrets: [String] = []
                for node in nodes {
                    guard let secret = string(node, at: "\(path).secret") else { return nil }
                    guard ValueReference.parse(secret) != nil else {
                        fail(node, "\(path).secret", "a secret does not belong in a spec; use '${secret:NAME}'")
                        return nil
                    }
                    secrets.append(secret)
                }
                spec.secret = secrets.first
                spec.previousSecret = secrets.count > 1 ? secrets[1] : nil
            }
            if let node = hookFields["signing"] {
                guard let text = string(node, at: "\(path).signing") else { return nil }
                guard let signing = WebhookSigning(rawValue: text) else {
                    fail(node, "\(path).signing", "expected 'standard' (Standard Webhooks) or 'provision' (Provision-Signature)")
                    return nil
                }
                spec.signing = signing
            }
            if let node = hookFields["format"] {
                guard let text = string(node, at: "\(path).format") else { return nil }
                guard let format = WebhookFormat(rawValue: text) else {
                    fail(node, "\(path).format", "expected 'provision', 'cloudevents' or 'cloudevents-binary'")
                    return nil
                }
                spec.format = format
            }
            if let headersNode = hookFields["headers"] {
                guard case .mapping(let mapping) = headersNode else {
                    fail(headersNode, "\(path).headers", "expected a mapping of header names to values")
                    return nil
                }
                for (nameNode, valueNode) in mapping {
                    guard case .scalar(let name) = nameNode, let value = string(valueNode, at: "\(path).headers.\(name.string)") else {
                        return nil
                    }
                    marks["\(path).headers.\(name.string)"] = valueNode.position
                    if SecretInText.isCredentialHeader(name.string), ValueReference.parse(value) == nil {
                        fail(valueNode, "\(path).headers.\(name.string)", "a credential does not belong in a spec; use '${secret:NAME}'")
                        return nil
                    }
                    spec.headers[name.string] = value
                }
            }
            return .webhook(spec)
        default:
            fail(sinkNode, "spec.sink.\(kind)", "sink '\(kind)' is not supported by this server version (supported: \(SinkSpec.kinds.joined(separator: ", ")))")
            return nil
        }
    }
}

/// Path rules for file sinks, as pure string logic so that validation needs no file system.
public enum FilePaths {
    /// `eu/orders.jsonl` stays; `./eu//orders.jsonl` becomes `eu/orders.jsonl`; absolute paths and
    /// paths that climb out of the root (`../x`, `a/../../x`) are nil.
    public static func normalizedRelativePath(_ path: String) -> String? {
        guard !path.isEmpty, !path.hasPrefix("/"), !path.contains("\0") else { return nil }
        var components: [Substring] = []
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch component {
            case ".": continue
            case "..":
                guard !components.isEmpty else { return nil }
                components.removeLast()
            default: components.append(component)
            }
        }
        guard !components.isEmpty else { return nil }
        return components.joined(separator: "/")
    }
}

/// A 1-based line and column in a spec file.
struct TextPosition: Sendable, Equatable {
    var line: Int
    var column: Int
}

extension Node {
    var position: TextPosition? {
        mark.map { TextPosition(line: $0.line, column: $0.column) }
    }
}

/// Where a spec might carry a credential in plain text.
enum SecretInText {
    private static let queryNames: Set<String> = [
        "password", "pass", "pwd", "passwd", "sslpassword", "secret", "token", "access_token", "api_key", "apikey", "key", "auth",
    ]

    /// The name of a query parameter of `url` that holds a credential (`?password=…`), if any.
    static func queryCredential(in url: String) -> String? {
        guard let query = url.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        for pair in query.split(separator: "&") {
            let name = pair.split(separator: "=", maxSplits: 1).first.map { $0.lowercased() } ?? ""
            if queryNames.contains(name) { return name }
        }
        return nil
    }

    /// Headers whose values are credentials.
    static func isCredentialHeader(_ name: String) -> Bool {
        ["authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-auth-token"].contains(name.lowercased())
    }
}
