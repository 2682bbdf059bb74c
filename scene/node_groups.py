"""Geometry Nodes groups built in code: the point-cloud display and the depth-plane confidence filter.

Groups are shared between imports: an existing group is reused when its marker and interface match, so two
imports do not produce "VGGT Point Cloud.001". Socket identifiers ("Socket_N") are always looked up from
`ng.interface.items_tree`, never hard-coded.
"""

from __future__ import annotations

import bpy

POINT_CLOUD_GROUP = "VGGT Point Cloud"
DEPTH_PLANE_GROUP = "VGGT Depth Plane Filter"
_MARKER_KEY = "vggt_group"

# (name, in_out, socket_type, settings) in interface order. The settings give each input its default, range
# and tooltip in the modifier panel (every version from 4.2 has them on the interface socket).
_MIN_CONFIDENCE = {
    "default_value": 1.0, "min_value": 1.0, "max_value": 1e6,
    "description": "Hide points whose confidence is below this (the model's raw confidence is at least 1; "
                   "2 to 5 keeps the reliable part)",
}
_POINT_CLOUD_INTERFACE = (
    ("Geometry", "INPUT", "NodeSocketGeometry", {}),
    ("Min Confidence", "INPUT", "NodeSocketFloat", _MIN_CONFIDENCE),
    ("Point Radius", "INPUT", "NodeSocketFloat", {
        "default_value": 0.005, "min_value": 0.0, "max_value": 1e4, "subtype": "DISTANCE",
        "description": "Radius of each point in scene units",
    }),
    ("Material", "INPUT", "NodeSocketMaterial", {"description": "Material of the points (reads the Col colour)"}),
    ("Geometry", "OUTPUT", "NodeSocketGeometry", {}),
)
_DEPTH_PLANE_INTERFACE = (
    ("Geometry", "INPUT", "NodeSocketGeometry", {}),
    ("Min Confidence", "INPUT", "NodeSocketFloat", dict(_MIN_CONFIDENCE, description=(
        "Hide depth-plane vertices (and their faces) whose confidence is below this; driven by the "
        "collection's shared Depth Planes Min Confidence"))),
    ("Geometry", "OUTPUT", "NodeSocketGeometry", {}),
)
# The collection property every depth plane of one reconstruction follows (a driver on each plane's input).
PLANE_MIN_CONFIDENCE_PROP = "vggt_plane_min_confidence"


def socket_identifier(group: bpy.types.NodeTree, name: str, in_out: str = "INPUT") -> str:
    """Identifier of the interface socket called `name` (what modifier["..."] and node sockets are keyed by)."""
    for item in group.interface.items_tree:
        if item.item_type == "SOCKET" and item.in_out == in_out and item.name == name:
            return item.identifier
    raise KeyError(f"node group {group.name!r} has no {in_out.lower()} socket {name!r}")


def _interface_signature(group: bpy.types.NodeTree) -> tuple:
    # Blender lists outputs before inputs in items_tree: compare in a fixed order.
    return tuple(sorted(
        (item.name, item.in_out, item.socket_type)
        for item in group.interface.items_tree
        if item.item_type == "SOCKET"
    ))


def _find_reusable(name: str, marker: str, interface: tuple) -> bpy.types.NodeTree | None:
    for group in bpy.data.node_groups:
        if group.bl_idname != "GeometryNodeTree" or group.get(_MARKER_KEY) != marker:
            continue
        if _interface_signature(group) == tuple(sorted(item[:3] for item in interface)):
            return group
    return None


def _new_group(name: str, marker: str, interface: tuple) -> bpy.types.NodeTree:
    group = bpy.data.node_groups.new(name, "GeometryNodeTree")
    if hasattr(group, "is_modifier"):
        group.is_modifier = True
    for sock_name, in_out, sock_type, settings in interface:
        socket = group.interface.new_socket(sock_name, in_out=in_out, socket_type=sock_type)
        for attr, value in settings.items():
            if hasattr(socket, attr):
                setattr(socket, attr, value)
    group[_MARKER_KEY] = marker
    return group


def _io_nodes(group: bpy.types.NodeTree):
    nodes = group.nodes
    g_in = nodes.new("NodeGroupInput")
    g_out = nodes.new("NodeGroupOutput")
    g_in.location = (-900, 0)
    g_out.location = (700, 0)
    return g_in, g_out


def _confidence_below(group: bpy.types.NodeTree, g_in, x: float = -600):
    """Named Attribute "conf" < Min Confidence -> the selection to delete."""
    nodes, links = group.nodes, group.links
    named = nodes.new("GeometryNodeInputNamedAttribute")
    named.data_type = "FLOAT"
    named.inputs["Name"].default_value = "conf"
    named.location = (x, -200)
    compare = nodes.new("FunctionNodeCompare")
    compare.data_type = "FLOAT"
    compare.operation = "LESS_THAN"
    compare.location = (x + 200, -150)
    links.new(named.outputs["Attribute"], compare.inputs["A"])
    links.new(g_in.outputs[socket_identifier(group, "Min Confidence")], compare.inputs["B"])
    return compare


def _output_by_identifier(node, identifier: str):
    for sock in node.outputs:
        if sock.identifier == identifier:
            return sock
    raise KeyError(identifier)


def _input_by_identifier(node, identifier: str):
    for sock in node.inputs:
        if sock.identifier == identifier:
            return sock
    raise KeyError(identifier)


def _new_confidence_filter(name: str, marker: str, interface: tuple):
    """A new group whose input Geometry loses every vertex (and the faces using it) with conf < Min Confidence.

    Returns (group, group input node, group output node, the Delete Geometry node to chain from).
    """
    group = _new_group(name, marker, interface)
    g_in, g_out = _io_nodes(group)
    compare = _confidence_below(group, g_in)
    delete = group.nodes.new("GeometryNodeDeleteGeometry")
    delete.domain = "POINT"
    delete.mode = "ALL"
    delete.location = (-150, 0)
    group.links.new(_output_by_identifier(g_in, socket_identifier(group, "Geometry")), delete.inputs["Geometry"])
    group.links.new(compare.outputs["Result"], delete.inputs["Selection"])
    return group, g_in, g_out, delete


def _link_to_output(group: bpy.types.NodeTree, g_out, socket) -> None:
    group.links.new(socket, _input_by_identifier(g_out, socket_identifier(group, "Geometry", "OUTPUT")))


def point_cloud_group() -> bpy.types.NodeTree:
    """conf < Min Confidence -> Delete Geometry -> Mesh to Points -> Set Point Radius -> Set Material."""
    marker = "point_cloud_v2"  # v2: defaults, ranges and tooltips
    found = _find_reusable(POINT_CLOUD_GROUP, marker, _POINT_CLOUD_INTERFACE)
    if found is not None:
        return found
    group, g_in, g_out, delete = _new_confidence_filter(POINT_CLOUD_GROUP, marker, _POINT_CLOUD_INTERFACE)
    nodes, links = group.nodes, group.links

    to_points = nodes.new("GeometryNodeMeshToPoints")
    to_points.mode = "VERTICES"
    to_points.location = (50, 0)
    links.new(delete.outputs["Geometry"], to_points.inputs["Mesh"])

    radius = nodes.new("GeometryNodeSetPointRadius")
    radius.location = (250, 0)
    links.new(to_points.outputs["Points"], radius.inputs["Points"])
    links.new(_output_by_identifier(g_in, socket_identifier(group, "Point Radius")), radius.inputs["Radius"])

    set_mat = nodes.new("GeometryNodeSetMaterial")
    set_mat.location = (450, 0)
    links.new(radius.outputs["Points"], set_mat.inputs["Geometry"])
    links.new(_output_by_identifier(g_in, socket_identifier(group, "Material")), set_mat.inputs["Material"])

    _link_to_output(group, g_out, set_mat.outputs["Geometry"])
    return group


def depth_plane_group() -> bpy.types.NodeTree:
    """Deletes vertices (and their faces) whose conf is below Min Confidence."""
    marker = "depth_plane_v2"
    found = _find_reusable(DEPTH_PLANE_GROUP, marker, _DEPTH_PLANE_INTERFACE)
    if found is not None:
        return found
    group, _, g_out, delete = _new_confidence_filter(DEPTH_PLANE_GROUP, marker, _DEPTH_PLANE_INTERFACE)
    _link_to_output(group, g_out, delete.outputs["Geometry"])
    return group


def _input_holder(mod: bpy.types.NodesModifier, identifier: str):
    """Where a Nodes modifier keeps one input's value: `mod.properties.inputs.<id>` (5.2+, which refuses
    `mod["Socket_N"]`) or the modifier's own ID properties (4.2-5.1). Decided by what the modifier offers."""
    inputs = getattr(getattr(mod, "properties", None), "inputs", None)
    if inputs is not None:
        return getattr(inputs, identifier)
    return None


def modifier_input(mod: bpy.types.NodesModifier, sock_name: str):
    """The value of a Nodes modifier input, by socket name, on every Blender version."""
    identifier = socket_identifier(mod.node_group, sock_name)
    holder = _input_holder(mod, identifier)
    return holder.value if holder is not None else mod[identifier]


def set_input_value(mod: bpy.types.NodesModifier, sock_name: str, value) -> None:
    """Set a Nodes modifier input by socket name, on every Blender version (the one place that knows how)."""
    identifier = socket_identifier(mod.node_group, sock_name)
    holder = _input_holder(mod, identifier)
    if holder is not None:
        holder.value = value
    else:
        mod[identifier] = value


def modifier_input_data_path(mod: bpy.types.NodesModifier, sock_name: str) -> str:
    """The input's RNA path from its object (what a driver or keyframe on it is keyed by)."""
    identifier = socket_identifier(mod.node_group, sock_name)
    base = f'modifiers["{bpy.utils.escape_identifier(mod.name)}"]'
    if _input_holder(mod, identifier) is not None:
        return f"{base}.properties.inputs.{identifier}.value"
    return f'{base}["{identifier}"]'


def add_modifier(ob: bpy.types.Object, group: bpy.types.NodeTree, inputs: dict, name: str = "VGGT"):
    """Add a Geometry Nodes modifier using `group`, setting its inputs by socket name."""
    mod = ob.modifiers.new(name, "NODES")
    mod.node_group = group
    for sock_name, value in inputs.items():
        set_input_value(mod, sock_name, value)
    return mod


def set_modifier_input(ob: bpy.types.Object, sock_name: str, value, modifier_name: str = "VGGT") -> None:
    """Change a GN modifier input by socket name and tag the object so the depsgraph re-evaluates it."""
    set_input_value(ob.modifiers[modifier_name], sock_name, value)
    ob.update_tag()


def drive_input_from_collection(ob: bpy.types.Object, sock_name: str, owner: bpy.types.Collection, prop: str,
                                modifier_name: str = "VGGT") -> None:
    """Drive a modifier input by the collection's custom property `owner[prop]` (a plain copy: no Python
    expression, so it runs with auto-run scripts off). Change the shared value with `set_shared_property`."""
    mod = ob.modifiers[modifier_name]
    curve = ob.driver_add(modifier_input_data_path(mod, sock_name))
    driver = curve.driver
    driver.type = "AVERAGE"
    var = driver.variables.new()
    var.name = "shared"
    var.type = "SINGLE_PROP"
    var.targets[0].id_type = "COLLECTION"
    var.targets[0].id = owner
    var.targets[0].data_path = f'["{prop}"]'


def set_shared_property(owner: bpy.types.ID, prop: str, value) -> None:
    """Set a custom property that drivers read, and tag its ID so they re-evaluate (the panel's field does
    this by itself; a script must)."""
    owner[prop] = value
    owner.update_tag()
