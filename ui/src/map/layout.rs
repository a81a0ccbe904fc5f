//! Server-side layout of the map: a layered drawing, clients on the left, servers on the
//! right.
//!
//! The steps are those of a Sugiyama drawing, each linear or `O(E log E)` per sweep:
//! cycles are broken by a depth-first search (back edges are laid out reversed); nodes are
//! layered by longest path, sources then pulled next to their nearest server; edges spanning
//! several layers get a dummy point per layer crossed; each layer is ordered by barycentre
//! sweeps, keeping the order with fewest crossings; each layer is then placed vertically as
//! close as possible to its neighbours while keeping its order and spacing (weighted
//! isotonic regression); edges are routed through their dummy points. Everything is
//! computed from the node and edge order alone, so the same graph gives the same drawing.

use std::collections::VecDeque;

use super::graph::Edge;
use super::node::Node;

/// Height of a node box.
pub const BOX_H: f64 = 58.0;
/// Horizontal space between two layers (room for edge labels).
const LAYER_GAP: f64 = 170.0;
/// Vertical space between two boxes of a layer.
const NODE_SEP: f64 = 24.0;
/// Vertical space between a box and an edge passing through its layer.
const MIXED_SEP: f64 = 14.0;
/// Vertical space between two edges passing through a layer.
const DUMMY_SEP: f64 = 10.0;
/// Space around the drawing (room for self-loops above the top boxes).
const MARGIN: f64 = 36.0;
/// Extra room right of the last layer for self-loops, same-layer arcs and their labels.
const RIGHT_PAD: f64 = 130.0;
/// Approximate advance of a character of the box title font.
pub(crate) const CHAR_W: f64 = 7.2;
/// Bounds of the box width, which fits the longest name.
const MIN_BOX_W: f64 = 140.0;
const MAX_BOX_W: f64 = 240.0;
/// Ordering sweeps (each one down and one up).
const ORDER_SWEEPS: usize = 8;
/// Vertical placement sweeps (each one down and one up).
const PLACE_SWEEPS: usize = 4;
/// Bounds of the number of layers; between them about `0.75·√n` for `n` nodes, so a deep
/// graph stays about twice as wide as tall instead of one column per step of its longest path.
const MIN_LAYER_CAP: usize = 6;
const MAX_LAYER_CAP: usize = 10;

/// A point of the drawing, in SVG user units (y grows downwards).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Point {
    /// Horizontal coordinate.
    pub x: f64,
    /// Vertical coordinate.
    pub y: f64,
}

/// Where a node's box is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeBox {
    /// Left side.
    pub x: f64,
    /// Top side.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
    /// Column, 0 on the left.
    pub layer: usize,
}

/// How the points of an [`EdgeRoute`] are joined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shape {
    /// Between layers: consecutive points joined by curves leaving and arriving
    /// horizontally.
    #[default]
    Layered,
    /// Both ends in one layer: an arc from the right side of one box to the right side of
    /// the other, bulging into the gap after the layer.
    SameLayer,
    /// A workload talking to itself: a loop above the top-right corner of its box.
    SelfLoop,
}

/// How an edge is drawn.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgeRoute {
    /// From the client's box to the server's box. Empty when the edge refers to a missing
    /// node.
    pub points: Vec<Point>,
    /// How the points are joined.
    pub shape: Shape,
    /// Where the edge's label goes (start of the text).
    pub label: Point,
}

impl EdgeRoute {
    /// The route as cubic Bézier segments `[start, control, control, end]`.
    pub fn segments(&self) -> Vec<[Point; 4]> {
        let p = &self.points;
        match (self.shape, p.first(), p.get(1)) {
            (Shape::Layered, _, _) => p
                .windows(2)
                .map(|w| {
                    let (a, b) = (w[0], w[1]);
                    let mx = (a.x + b.x) / 2.0;
                    [a, Point { x: mx, y: a.y }, Point { x: mx, y: b.y }, b]
                })
                .collect(),
            (Shape::SameLayer, Some(&a), Some(&b)) => {
                let bulge = ((b.y - a.y).abs() * 0.35).clamp(24.0, LAYER_GAP * 0.45);
                vec![[
                    a,
                    Point {
                        x: a.x + bulge,
                        y: a.y,
                    },
                    Point {
                        x: b.x + bulge,
                        y: b.y,
                    },
                    b,
                ]]
            }
            (Shape::SelfLoop, Some(&a), Some(&b)) => {
                vec![[
                    a,
                    Point {
                        x: a.x,
                        y: a.y - 34.0,
                    },
                    Point {
                        x: b.x + 34.0,
                        y: b.y,
                    },
                    b,
                ]]
            }
            _ => Vec::new(),
        }
    }
}

/// Positions of every node and edge of a graph, by index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layout {
    /// Width of the drawing.
    pub width: f64,
    /// Height of the drawing.
    pub height: f64,
    /// One box per node, same index as the graph's nodes.
    pub nodes: Vec<NodeBox>,
    /// One route per edge, same index as the graph's edges.
    pub edges: Vec<EdgeRoute>,
}

/// Lays out `nodes` and `edges` (edges referring to missing nodes get an empty route).
pub fn layout(nodes: &[Node], edges: &[Edge]) -> Layout {
    let n = nodes.len();
    let box_w = box_width(nodes);
    let reversed = break_cycles(n, edges);
    // Edges as laid out: left end, right end, original index.
    let dag: Vec<(usize, usize, usize)> = edges
        .iter()
        .enumerate()
        .filter(|(_, e)| e.from != e.to && e.from < n && e.to < n)
        .map(|(i, e)| {
            if reversed.get(i).copied().unwrap_or(false) {
                (e.to, e.from, i)
            } else {
                (e.from, e.to, i)
            }
        })
        .collect();
    let layer = assign_layers(n, &dag);
    let mut v = Virtual::new(n, &layer, &dag, edges.len());
    v.order();
    let y = v.place();

    let col_x = |l: usize| MARGIN + l as f64 * (box_w + LAYER_GAP);
    let boxes: Vec<NodeBox> = (0..n)
        .map(|i| {
            let l = layer.get(i).copied().unwrap_or(0);
            NodeBox {
                x: col_x(l),
                y: y.get(i).copied().unwrap_or(0.0) - BOX_H / 2.0,
                w: box_w,
                h: BOX_H,
                layer: l,
            }
        })
        .collect();

    // Attachment points: edges leave a box on its right side and enter on its left side,
    // spread along it in the order of the point they head to, so they do not cross there.
    // Same-layer edges use the right side at both ends. Entries: (y of the point the edge
    // heads to, edge, whether this is the edge's left end).
    let mut right: Vec<Vec<(f64, usize, bool)>> = vec![Vec::new(); n];
    let mut left: Vec<Vec<(f64, usize, bool)>> = vec![Vec::new(); n];
    for (e, chain) in v.chains.iter().enumerate() {
        if let (Some(&a), Some(&a2), Some(&b2), Some(&b)) = (
            chain.first(),
            chain.get(1),
            chain.get(chain.len().wrapping_sub(2)),
            chain.last(),
        ) {
            let same = layer.get(a) == layer.get(b);
            if let Some(r) = right.get_mut(a) {
                r.push((y.get(a2).copied().unwrap_or(0.0), e, true));
            }
            let side = if same { &mut right } else { &mut left };
            if let Some(l) = side.get_mut(b) {
                l.push((y.get(b2).copied().unwrap_or(0.0), e, false));
            }
        }
    }
    let mut slot_out = vec![0.0; edges.len()];
    let mut slot_in = vec![0.0; edges.len()];
    for side in [&mut right, &mut left] {
        for (node, list) in side.iter_mut().enumerate() {
            list.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            let top = boxes.get(node).map_or(0.0, |b| b.y);
            let k = list.len() as f64;
            for (i, &(_, e, is_left_end)) in list.iter().enumerate() {
                let slots = if is_left_end {
                    &mut slot_out
                } else {
                    &mut slot_in
                };
                if let Some(s) = slots.get_mut(e) {
                    *s = top + 6.0 + (BOX_H - 12.0) * (i as f64 + 1.0) / (k + 1.0);
                }
            }
        }
    }

    let routes: Vec<EdgeRoute> = edges
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if e.from == e.to {
                return match boxes.get(e.from) {
                    Some(b) => self_loop(b),
                    None => EdgeRoute::default(),
                };
            }
            let Some(chain) = v.chains.get(i).filter(|c| c.len() >= 2) else {
                return EdgeRoute::default();
            };
            let (first, last) = (chain[0], chain[chain.len() - 1]);
            let (lf, ll) = (
                layer.get(first).copied().unwrap_or(0),
                layer.get(last).copied().unwrap_or(0),
            );
            let shape = if lf == ll {
                Shape::SameLayer
            } else {
                Shape::Layered
            };
            let mut points = Vec::with_capacity(2 * chain.len());
            points.push(Point {
                x: col_x(lf) + box_w,
                y: slot_out[i],
            });
            for &d in &chain[1..chain.len() - 1] {
                let (x, yd) = (
                    col_x(v.layer.get(d).copied().unwrap_or(0)),
                    y.get(d).copied().unwrap_or(0.0),
                );
                points.push(Point { x, y: yd });
                points.push(Point {
                    x: x + box_w,
                    y: yd,
                });
            }
            let end_x = if shape == Shape::SameLayer {
                col_x(ll) + box_w
            } else {
                col_x(ll)
            };
            points.push(Point {
                x: end_x,
                y: slot_in[i],
            });
            if reversed.get(i).copied().unwrap_or(false) {
                points.reverse();
            }
            let mut route = EdgeRoute {
                points,
                shape,
                label: Point::default(),
            };
            // Near the client, so labels of a two-way pair land at opposite ends of the gap.
            route.label = route
                .segments()
                .first()
                .map_or(Point::default(), |s| cubic_point(s, 0.3));
            route
        })
        .collect();

    let layers = layer.iter().copied().max().map_or(0, |m| m + 1);
    let bottom = (0..v.layer.len())
        .map(|i| y[i] + v.height(i) / 2.0)
        .fold(0.0, f64::max);
    Layout {
        width: if layers == 0 {
            2.0 * MARGIN
        } else {
            col_x(layers - 1) + box_w + RIGHT_PAD
        },
        height: (bottom + MARGIN).max(2.0 * MARGIN),
        nodes: boxes,
        edges: routes,
    }
}

/// Box width: fits the longest name, namespace or kind, within bounds.
fn box_width(nodes: &[Node]) -> f64 {
    let longest = nodes
        .iter()
        .map(|n| {
            n.name
                .chars()
                .count()
                .max(n.namespace.chars().count())
                .max(n.kind.chars().count())
        })
        .max()
        .unwrap_or(0);
    (longest as f64 * CHAR_W + 24.0).clamp(MIN_BOX_W, MAX_BOX_W)
}

/// A loop above the top-right corner of a box.
fn self_loop(b: &NodeBox) -> EdgeRoute {
    EdgeRoute {
        points: vec![
            Point {
                x: b.x + b.w - 18.0,
                y: b.y,
            },
            Point {
                x: b.x + b.w,
                y: b.y + 18.0,
            },
        ],
        shape: Shape::SelfLoop,
        label: Point {
            x: b.x + b.w + 6.0,
            y: b.y - 8.0,
        },
    }
}

/// Point at `t` on a cubic Bézier segment.
fn cubic_point(s: &[Point; 4], t: f64) -> Point {
    let u = 1.0 - t;
    let c = [u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t];
    Point {
        x: s.iter().zip(c).map(|(p, k)| p.x * k).sum(),
        y: s.iter().zip(c).map(|(p, k)| p.y * k).sum(),
    }
}

/// Which edges to lay out reversed so the rest is acyclic: the back edges of a depth-first
/// search started from the sources, then from the other nodes in index order.
fn break_cycles(n: usize, edges: &[Edge]) -> Vec<bool> {
    let mut out: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
    let mut has_in = vec![false; n];
    for (i, e) in edges.iter().enumerate() {
        if e.from != e.to && e.from < n && e.to < n {
            out[e.from].push((e.to, i));
            has_in[e.to] = true;
        }
    }
    let mut reversed = vec![false; edges.len()];
    // 0 unvisited, 1 on the stack, 2 done.
    let mut state = vec![0u8; n];
    let roots = (0..n)
        .filter(|&i| !has_in[i])
        .chain((0..n).filter(|&i| has_in[i]));
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in roots {
        if state[root] != 0 {
            continue;
        }
        state[root] = 1;
        stack.push((root, 0));
        while let Some(top) = stack.last_mut() {
            let (u, i) = *top;
            match out[u].get(i) {
                Some(&(w, e)) => {
                    top.1 += 1;
                    match state[w] {
                        0 => {
                            state[w] = 1;
                            stack.push((w, 0));
                        }
                        1 => reversed[e] = true,
                        _ => {}
                    }
                }
                None => {
                    state[u] = 2;
                    stack.pop();
                }
            }
        }
    }
    reversed
}

/// Layer of each node: longest path from a source, then each source moved right next to
/// its nearest successor, then empty layers removed.
fn assign_layers(n: usize, dag: &[(usize, usize, usize)]) -> Vec<usize> {
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indeg = vec![0usize; n];
    for &(a, b, _) in dag {
        succ[a].push(b);
        indeg[b] += 1;
    }
    let has_in: Vec<bool> = indeg.iter().map(|&d| d > 0).collect();
    let mut layer = vec![0usize; n];
    let mut queue: VecDeque<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    while let Some(u) = queue.pop_front() {
        for &w in &succ[u] {
            layer[w] = layer[w].max(layer[u] + 1);
            indeg[w] -= 1;
            if indeg[w] == 0 {
                queue.push_back(w);
            }
        }
    }
    for u in 0..n {
        if !has_in[u] {
            if let Some(m) = succ[u].iter().map(|&w| layer[w]).min() {
                layer[u] = m.saturating_sub(1);
            }
        }
    }
    let max = layer.iter().copied().max().unwrap_or(0);
    let mut count = vec![0usize; max + 1];
    for &l in &layer {
        count[l] += 1;
    }
    // Too many layers: merge consecutive ones into `cap` groups of about equal node count
    // (by the quantile of each layer's middle node). The mapping never decreases, so edges
    // still run left to right or, when merged, within a layer.
    let cap = ((n as f64).sqrt() * 0.75)
        .ceil()
        .clamp(MIN_LAYER_CAP as f64, MAX_LAYER_CAP as f64) as usize;
    let used = count.iter().filter(|&&c| c > 0).count();
    let mut remap = vec![0usize; max + 1];
    if used > cap {
        let mut before = 0usize;
        for l in 0..=max {
            let mid = before as f64 + count[l] as f64 / 2.0;
            remap[l] = ((mid * cap as f64 / n.max(1) as f64) as usize).min(cap - 1);
            before += count[l];
        }
    } else {
        let mut next = 0;
        for l in 0..=max {
            remap[l] = next;
            if count[l] > 0 {
                next += 1;
            }
        }
    }
    // Renumber so no layer is empty.
    let mut seen = vec![false; max + 1];
    for &l in &layer {
        seen[remap[l]] = true;
    }
    let mut dense = vec![0usize; max + 1];
    let mut next = 0;
    for l in 0..=max {
        dense[l] = next;
        if seen[l] {
            next += 1;
        }
    }
    layer.iter().map(|&l| dense[remap[l]]).collect()
}

/// The layered graph: the real nodes (same indices) then one dummy node per layer crossed
/// by a long edge.
struct Virtual {
    /// Number of real nodes.
    real: usize,
    /// Layer of every virtual node.
    layer: Vec<usize>,
    /// Neighbours in the layer before / after.
    preds: Vec<Vec<usize>>,
    succs: Vec<Vec<usize>>,
    /// Virtual nodes in each layer, in drawing order (top to bottom).
    layers: Vec<Vec<usize>>,
    /// Index of each virtual node in its layer.
    pos: Vec<usize>,
    /// Per original edge, its virtual nodes from left to right (empty for self-loops).
    chains: Vec<Vec<usize>>,
}

impl Virtual {
    fn new(n: usize, layer: &[usize], dag: &[(usize, usize, usize)], edge_count: usize) -> Virtual {
        let mut v = Virtual {
            real: n,
            layer: layer.to_vec(),
            preds: vec![Vec::new(); n],
            succs: vec![Vec::new(); n],
            layers: Vec::new(),
            pos: Vec::new(),
            chains: vec![Vec::new(); edge_count],
        };
        for &(a, b, e) in dag {
            let (la, lb) = (layer[a], layer[b]);
            let mut chain = vec![a];
            let mut prev = a;
            for l in la + 1..lb {
                let d = v.layer.len();
                v.layer.push(l);
                v.preds.push(Vec::new());
                v.succs.push(Vec::new());
                v.link(prev, d);
                chain.push(d);
                prev = d;
            }
            // Same-layer edges (from merged layers) take no part in ordering.
            if la < lb {
                v.link(prev, b);
            }
            chain.push(b);
            if let Some(c) = v.chains.get_mut(e) {
                *c = chain;
            }
        }
        let count = v.layer.iter().copied().max().map_or(0, |m| m + 1);
        v.layers = vec![Vec::new(); count];
        for (i, &l) in v.layer.iter().enumerate() {
            v.layers[l].push(i);
        }
        v.pos = vec![0; v.layer.len()];
        v.index_positions();
        v
    }

    fn link(&mut self, a: usize, b: usize) {
        self.succs[a].push(b);
        self.preds[b].push(a);
    }

    fn height(&self, i: usize) -> f64 {
        if i < self.real {
            BOX_H
        } else {
            0.0
        }
    }

    fn index_positions(&mut self) {
        for layer in &self.layers {
            for (p, &i) in layer.iter().enumerate() {
                self.pos[i] = p;
            }
        }
    }

    /// Orders the layers by barycentre sweeps, keeping the order with fewest crossings.
    fn order(&mut self) {
        let mut best = self.crossings();
        let mut best_layers = self.layers.clone();
        let count = self.layers.len();
        for _ in 0..ORDER_SWEEPS {
            if best == 0 {
                break;
            }
            for down in [true, false] {
                let range: Vec<usize> = if down {
                    (1..count).collect()
                } else {
                    (0..count.saturating_sub(1)).rev().collect()
                };
                for l in range {
                    self.sort_layer(l, down);
                }
                let c = self.crossings();
                if c < best {
                    best = c;
                    best_layers.clone_from(&self.layers);
                }
            }
        }
        self.layers = best_layers;
        self.index_positions();
    }

    /// Sorts layer `l` by the mean relative position of its neighbours in the layer before
    /// (`down`) or after; nodes without such neighbours keep their relative position.
    fn sort_layer(&mut self, l: usize, down: bool) {
        let other = if down { l.wrapping_sub(1) } else { l + 1 };
        let other_len = self.layers.get(other).map_or(1, Vec::len).max(1) as f64;
        let own_len = self.layers[l].len().max(1) as f64;
        let mut keyed: Vec<(f64, usize, usize)> = self.layers[l]
            .iter()
            .map(|&i| {
                let adj = if down { &self.preds[i] } else { &self.succs[i] };
                let key = if adj.is_empty() {
                    (self.pos[i] as f64 + 0.5) / own_len
                } else {
                    adj.iter().map(|&j| self.pos[j] as f64 + 0.5).sum::<f64>()
                        / adj.len() as f64
                        / other_len
                };
                (key, self.pos[i], i)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (p, &(_, _, i)) in keyed.iter().enumerate() {
            self.layers[l][p] = i;
            self.pos[i] = p;
        }
    }

    /// Edge crossings between consecutive layers (inversions counted with a Fenwick tree).
    fn crossings(&self) -> u64 {
        let mut total = 0u64;
        for l in 0..self.layers.len().saturating_sub(1) {
            let mut pairs: Vec<(usize, usize)> = self.layers[l]
                .iter()
                .flat_map(|&u| self.succs[u].iter().map(move |&w| (u, w)))
                .map(|(u, w)| (self.pos[u], self.pos[w]))
                .collect();
            pairs.sort_unstable();
            let size = self.layers[l + 1].len();
            let mut tree = vec![0u64; size + 1];
            for (inserted, (_, p)) in pairs.into_iter().enumerate() {
                // Already inserted segments ending strictly below p cross this one.
                let mut at_most = 0u64;
                let mut k = p + 1;
                while k > 0 {
                    at_most += tree[k];
                    k &= k - 1;
                }
                total += inserted as u64 - at_most;
                let mut k = p + 1;
                while k <= size {
                    tree[k] += 1;
                    k += k & k.wrapping_neg();
                }
            }
        }
        total
    }

    /// Vertical centre of every virtual node.
    fn place(&self) -> Vec<f64> {
        let mut y = vec![0.0; self.layer.len()];
        // Offsets of each node from the first of its layer when packed.
        let offsets: Vec<Vec<f64>> = self
            .layers
            .iter()
            .map(|layer| {
                let mut acc = 0.0;
                let mut out = Vec::with_capacity(layer.len());
                for (k, &i) in layer.iter().enumerate() {
                    if k > 0 {
                        let p = layer[k - 1];
                        let gap = match (p < self.real, i < self.real) {
                            (true, true) => NODE_SEP,
                            (false, false) => DUMMY_SEP,
                            _ => MIXED_SEP,
                        };
                        acc += self.height(p) / 2.0 + gap + self.height(i) / 2.0;
                    }
                    out.push(acc);
                }
                out
            })
            .collect();
        let span = |o: &Vec<f64>| o.last().copied().unwrap_or(0.0);
        let tallest = offsets.iter().map(span).fold(0.0, f64::max);
        for (layer, off) in self.layers.iter().zip(&offsets) {
            let shift = (tallest - span(off)) / 2.0;
            for (&i, &o) in layer.iter().zip(off) {
                y[i] = o + shift;
            }
        }
        let count = self.layers.len();
        for _ in 0..PLACE_SWEEPS {
            for down in [true, false] {
                let range: Vec<usize> = if down {
                    (1..count).collect()
                } else {
                    (0..count.saturating_sub(1)).rev().collect()
                };
                for l in range {
                    let layer = &self.layers[l];
                    let (desired, weight): (Vec<f64>, Vec<f64>) = layer
                        .iter()
                        .map(|&i| {
                            let adj = if down { &self.preds[i] } else { &self.succs[i] };
                            if adj.is_empty() {
                                (y[i], 0.5)
                            } else {
                                (
                                    adj.iter().map(|&j| y[j]).sum::<f64>() / adj.len() as f64,
                                    adj.len() as f64,
                                )
                            }
                        })
                        .unzip();
                    let placed = isotonic(&desired, &weight, &offsets[l]);
                    for (&i, p) in layer.iter().zip(placed) {
                        y[i] = p;
                    }
                }
            }
        }
        let top = (0..y.len())
            .map(|i| y[i] - self.height(i) / 2.0)
            .fold(f64::INFINITY, f64::min);
        let shift = if top.is_finite() { MARGIN - top } else { 0.0 };
        y.iter_mut().for_each(|v| *v += shift);
        y
    }
}

/// Positions closest (weighted least squares) to `desired` such that position `i + 1` is at
/// least `offsets[i + 1] - offsets[i]` below position `i`: pool-adjacent-violators on
/// `desired - offsets`, which must be non-decreasing.
fn isotonic(desired: &[f64], weight: &[f64], offsets: &[f64]) -> Vec<f64> {
    // (weighted sum, total weight, count)
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(desired.len());
    for ((&d, &w), &o) in desired.iter().zip(weight).zip(offsets) {
        blocks.push((w * (d - o), w, 1));
        while blocks.len() >= 2 {
            let (b, a) = (blocks[blocks.len() - 1], blocks[blocks.len() - 2]);
            if a.0 / a.1 <= b.0 / b.1 {
                break;
            }
            blocks.pop();
            let last = blocks.len() - 1;
            blocks[last] = (a.0 + b.0, a.1 + b.1, a.2 + b.2);
        }
    }
    let mut out = Vec::with_capacity(desired.len());
    for (sum, w, count) in blocks {
        let z = sum / w;
        for _ in 0..count {
            out.push(z);
        }
    }
    out.iter_mut().zip(offsets).for_each(|(z, o)| *z += o);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::graph::tests::{flow, pod};
    use crate::map::{build, ServiceGraph};
    use lumen_api::flow::{Flow, Verdict};

    /// A graph of `workloads` workloads with about `edges` edges, some of them cycles.
    pub(crate) fn synthetic(workloads: usize, edges: usize) -> Vec<Flow> {
        let mut flows = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move |m: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % m.max(1) as u64) as usize
        };
        for k in 0..edges {
            let (a, b) = (rnd(workloads), rnd(workloads));
            let v = if k % 7 == 0 {
                Verdict::Dropped
            } else {
                Verdict::Forwarded
            };
            flows.push(flow(
                pod(&format!("ns{}", a % 4), &format!("w{a}")),
                pod(&format!("ns{}", b % 4), &format!("w{b}")),
                1000 + k as u32,
                80 + (k % 3) as u32,
                v,
            ));
        }
        flows
    }

    fn assert_no_overlap(g: &ServiceGraph) {
        let b = &g.layout.nodes;
        assert_eq!(b.len(), g.nodes.len());
        for i in 0..b.len() {
            assert!(b[i].x >= 0.0 && b[i].y >= 0.0);
            assert!(b[i].x + b[i].w <= g.layout.width && b[i].y + b[i].h <= g.layout.height);
            for j in i + 1..b.len() {
                let apart = b[i].x + b[i].w <= b[j].x
                    || b[j].x + b[j].w <= b[i].x
                    || b[i].y + b[i].h <= b[j].y
                    || b[j].y + b[j].h <= b[i].y;
                assert!(apart, "boxes {i} and {j} overlap: {:?} {:?}", b[i], b[j]);
            }
        }
    }

    #[test]
    fn boxes_never_overlap() {
        for (w, e) in [(1, 1), (5, 12), (50, 150), (200, 2000)] {
            assert_no_overlap(&build(&synthetic(w, e), None));
        }
    }

    #[test]
    fn clients_left_of_servers_and_chain_straight() {
        let flows = vec![
            flow(pod("a", "web"), pod("a", "api"), 1, 80, Verdict::Forwarded),
            flow(pod("a", "api"), pod("a", "db"), 1, 5432, Verdict::Forwarded),
            flow(pod("a", "web"), pod("a", "db"), 1, 5432, Verdict::Forwarded),
        ];
        let g = build(&flows, None);
        let at = |name: &str| {
            g.nodes
                .iter()
                .position(|n| n.name == name)
                .map(|i| g.layout.nodes[i])
                .unwrap()
        };
        assert_eq!(
            (at("web").layer, at("api").layer, at("db").layer),
            (0, 1, 2)
        );
        // The long edge web → db goes around api through a dummy point.
        let long = g
            .edges
            .iter()
            .position(|e| g.nodes[e.from].name == "web" && g.nodes[e.to].name == "db")
            .unwrap();
        assert_eq!(g.layout.edges[long].points.len(), 4);
    }

    #[test]
    fn cycles_and_self_loops_are_laid_out() {
        let flows = vec![
            flow(pod("a", "x"), pod("a", "y"), 1, 80, Verdict::Forwarded),
            flow(pod("a", "y"), pod("a", "x"), 1, 80, Verdict::Forwarded),
            flow(pod("a", "x"), pod("a", "x"), 1, 80, Verdict::Forwarded),
        ];
        let g = build(&flows, None);
        assert_no_overlap(&g);
        assert_eq!(g.edges.len(), 3);
        assert!(g.layout.edges.iter().any(|r| r.shape == Shape::SelfLoop));
        for (e, r) in g.edges.iter().zip(&g.layout.edges) {
            if e.from == e.to {
                continue;
            }
            // Routes start at the client's box and end at the server's, whichever way they run.
            let (s, d) = (g.layout.nodes[e.from], g.layout.nodes[e.to]);
            let (p0, pn) = (r.points[0], r.points[r.points.len() - 1]);
            assert!(p0.x == s.x || p0.x == s.x + s.w, "{p0:?} {s:?}");
            assert!(pn.x == d.x || pn.x == d.x + d.w, "{pn:?} {d:?}");
        }
    }

    #[test]
    fn deterministic_whatever_the_flow_order() {
        let flows = synthetic(60, 300);
        let a = build(&flows, None);
        let mut rev = flows.clone();
        rev.reverse();
        let b = build(&rev, None);
        assert_eq!(a.nodes, b.nodes);
        assert_eq!(a.layout, b.layout);
    }

    #[test]
    fn deep_graphs_are_folded_into_few_layers() {
        let chain: Vec<Flow> = (0..40)
            .map(|i| {
                flow(
                    pod("a", &format!("w{i:02}")),
                    pod("a", &format!("w{:02}", i + 1)),
                    1,
                    80,
                    Verdict::Forwarded,
                )
            })
            .collect();
        let g = build(&chain, None);
        let layers = g.layout.nodes.iter().map(|b| b.layer).max().unwrap() + 1;
        assert!(layers <= MAX_LAYER_CAP, "{layers} layers");
        assert_no_overlap(&g);
        let same = g
            .layout
            .edges
            .iter()
            .filter(|r| r.shape == Shape::SameLayer)
            .count();
        assert!(same > 0);
        for (e, r) in g.edges.iter().zip(&g.layout.edges) {
            let (s, d) = (g.layout.nodes[e.from], g.layout.nodes[e.to]);
            assert!(s.layer <= d.layer, "edges run left to right");
            if r.shape == Shape::SameLayer {
                assert_eq!(r.points[0].x, s.x + s.w);
                assert_eq!(r.points[1].x, d.x + d.w);
            }
        }
        // A short chain keeps one layer per step.
        let g = build(&chain[..4], None);
        assert_eq!(g.layout.nodes.iter().map(|b| b.layer).max(), Some(4));
    }

    #[test]
    fn edges_with_missing_nodes_do_not_panic() {
        let mut g = build(&synthetic(5, 10), None);
        if let Some(e) = g.edges.first_mut() {
            e.to = 999;
        }
        let l = layout(&g.nodes, &g.edges);
        assert!(l.edges[0].points.is_empty());
        assert_eq!(layout(&[], &[]).nodes.len(), 0);
    }

    #[test]
    fn isotonic_keeps_order_and_spacing() {
        let out = isotonic(&[10.0, 0.0, 5.0], &[1.0, 1.0, 1.0], &[0.0, 10.0, 20.0]);
        assert!(out[1] - out[0] >= 10.0 - 1e-9 && out[2] - out[1] >= 10.0 - 1e-9);
    }
}
