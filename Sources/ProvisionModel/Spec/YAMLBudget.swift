// libyaml is the parser Yams is built on. Its event API is read here directly because the
// composed tree arrives too late: aliases are copies, and composing a mapping whose key is an
// alias of a nested alias hashes every copy, so a few hundred bytes (the "billion laughs")
// take minutes and gigabytes before any node reaches the spec reader.
import CYaml

/// Measures a YAML stream from its parser events, before anything is composed: how many
/// nodes each document has once its aliases are expanded, and how deep it nests. The cost is
/// one pass over the events whatever the aliases expand to.
enum YAMLBudget {
    struct Exceeded: Equatable {
        var line: Int
        var column: Int
        var message: String
    }

    /// The first place a document exceeds `maximumNodes` or `maximumDepth`, or nil. Syntax
    /// errors are not reported here: the composer reports them with its own message.
    static func check(_ text: String, maximumNodes: Int, maximumDepth: Int) -> Exceeded? {
        var bytes = Array(text.utf8)
        return bytes.withUnsafeMutableBufferPointer { buffer in
            var parser = yaml_parser_t()
            guard yaml_parser_initialize(&parser) == 1 else { return nil }
            defer { yaml_parser_delete(&parser) }
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            var walk = Walk(maximumNodes: maximumNodes, maximumDepth: maximumDepth)
            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else { return nil }
                defer { yaml_event_delete(&event) }
                if event.type == YAML_STREAM_END_EVENT { return nil }
                if let message = walk.take(event) {
                    return Exceeded(line: Int(event.start_mark.line) + 1, column: Int(event.start_mark.column) + 1, message: message)
                }
            }
        }
    }

    /// The running count of one document.
    private struct Walk {
        let maximumNodes: Int
        let maximumDepth: Int

        /// An open mapping or list: where its nodes began and the deepest level inside it.
        private struct Open {
            var anchor: String?
            var firstNode: Int
            var deepest: Int
        }

        private var nodes = 0
        private var open: [Open] = []
        /// Each anchor's expanded size and height, as an alias of it would add them.
        private var anchors: [String: (nodes: Int, height: Int)] = [:]

        init(maximumNodes: Int, maximumDepth: Int) {
            self.maximumNodes = maximumNodes
            self.maximumDepth = maximumDepth
        }

        mutating func take(_ event: yaml_event_t) -> String? {
            switch event.type {
            case YAML_DOCUMENT_START_EVENT:
                nodes = 0
                open = []
                anchors = [:]
                return nil
            case YAML_SCALAR_EVENT:
                if let anchor = Self.name(event.data.scalar.anchor) { anchors[anchor] = (1, 1) }
                return add(nodes: 1, height: 1)
            case YAML_ALIAS_EVENT:
                let target = Self.name(event.data.alias.anchor).flatMap { anchors[$0] } ?? (1, 1)
                return add(nodes: target.nodes, height: target.height)
            case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                let anchor = event.type == YAML_SEQUENCE_START_EVENT
                    ? Self.name(event.data.sequence_start.anchor) : Self.name(event.data.mapping_start.anchor)
                if let problem = add(nodes: 1, height: 1) { return problem }
                open.append(Open(anchor: anchor, firstNode: nodes, deepest: open.count + 1))
                return nil
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                guard let closed = open.popLast() else { return nil }
                if let anchor = closed.anchor {
                    anchors[anchor] = (nodes - closed.firstNode + 1, closed.deepest - open.count)
                }
                if !open.isEmpty { open[open.count - 1].deepest = max(open[open.count - 1].deepest, closed.deepest) }
                return nil
            default:
                return nil
            }
        }

        /// Counts a node of `nodes` expanded nodes, `height` levels tall, at the current level.
        private mutating func add(nodes count: Int, height: Int) -> String? {
            nodes += count
            if nodes > maximumNodes {
                return "the document has more than \(maximumNodes) values once its aliases are expanded"
            }
            let depth = open.count + height
            if depth > maximumDepth {
                return "the document nests more than \(maximumDepth) levels deep"
            }
            if !open.isEmpty { open[open.count - 1].deepest = max(open[open.count - 1].deepest, depth) }
            return nil
        }

        private static func name(_ anchor: UnsafeMutablePointer<yaml_char_t>?) -> String? {
            anchor.map { String(cString: $0) }
        }
    }
}
