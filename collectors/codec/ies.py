"""Information elements: IANA IPFIX ids, enterprise ones, RFC 5103 reverse ones.

A table, not a switch: :data:`IANA` maps element id -> :class:`IE` (name in
snake_case, abstract type, default size, semantics), parsed from the compact
text below, which follows the IANA "IPFIX Information Elements" registry.
NetFlow v9 field types 1-127 have the same numbers and meanings, so v9
templates use this table too; v9 types of ntop's nProbe (57472 + n) are
mapped to enterprise 35632 element n (:func:`v9_field_key`).

Enterprise elements are keyed by ``(pen, id)`` in :data:`ENTERPRISE`.
Reverse elements (RFC 5103: PEN 29305, same id as the forward element) are
derived: :func:`lookup` answers ``reverse_<name>`` for any IANA element.

Abstract types and how a field of that type and its exported length becomes
a numpy dtype (reduced-size encoding of RFC 7011 6.2 included) are in
:func:`field_dtype`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: RFC 5103 reverse information elements.
PEN_REVERSE = 29305
#: ntop (nProbe, nDPI).
PEN_NTOP = 35632
#: NetFlow v9 field types of nProbe: 57472 + element id of PEN_NTOP.
NTOP_V9_BASE = 57472


@dataclass(frozen=True, slots=True)
class IE:
    pen: int
    id: int
    name: str
    #: u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 bool mac ipv4 ipv6 str octets
    #: s ms us ns (dateTime Seconds/Milliseconds/Microseconds/Nanoseconds)
    type: str
    #: delta, total, id, flags, quantity or "" (default)
    semantics: str = ""

    @property
    def size(self) -> int:
        """Default (full) size in bytes; 65535 (variable) for str/octets."""
        return _SIZES.get(self.type, 65535)


_SIZES = {
    "u8": 1, "u16": 2, "u32": 4, "u64": 8, "i8": 1, "i16": 2, "i32": 4, "i64": 8,
    "f32": 4, "f64": 8, "bool": 1, "mac": 6, "ipv4": 4, "ipv6": 16,
    "s": 4, "ms": 8, "us": 8, "ns": 8,
}  # fmt: skip

# id name type [semantics]   (IANA registry; names converted to snake_case)
_IANA_TEXT = """
1 octet_delta_count u64 delta
2 packet_delta_count u64 delta
3 delta_flow_count u64 delta
4 protocol_identifier u8 id
5 ip_class_of_service u8 id
6 tcp_control_bits u16 flags
7 source_transport_port u16 id
8 source_ipv4_address ipv4 id
9 source_ipv4_prefix_length u8
10 ingress_interface u32 id
11 destination_transport_port u16 id
12 destination_ipv4_address ipv4 id
13 destination_ipv4_prefix_length u8
14 egress_interface u32 id
15 ip_next_hop_ipv4_address ipv4
16 bgp_source_as_number u32 id
17 bgp_destination_as_number u32 id
18 bgp_next_hop_ipv4_address ipv4
19 post_mcast_packet_delta_count u64 delta
20 post_mcast_octet_delta_count u64 delta
21 flow_end_sys_up_time u32
22 flow_start_sys_up_time u32
23 post_octet_delta_count u64 delta
24 post_packet_delta_count u64 delta
25 minimum_ip_total_length u64
26 maximum_ip_total_length u64
27 source_ipv6_address ipv6 id
28 destination_ipv6_address ipv6 id
29 source_ipv6_prefix_length u8
30 destination_ipv6_prefix_length u8
31 flow_label_ipv6 u32 id
32 icmp_type_code_ipv4 u16 id
33 igmp_type u8 id
34 sampling_interval u32 quantity
35 sampling_algorithm u8 id
36 flow_active_timeout u16
37 flow_idle_timeout u16
38 engine_type u8 id
39 engine_id u8 id
40 exported_octet_total_count u64 total
41 exported_message_total_count u64 total
42 exported_flow_record_total_count u64 total
43 ipv4_router_sc ipv4
44 source_ipv4_prefix ipv4
45 destination_ipv4_prefix ipv4
46 mpls_top_label_type u8 id
47 mpls_top_label_ipv4_address ipv4
48 sampler_id u8 id
49 sampler_mode u8 id
50 sampler_random_interval u32 quantity
51 class_id u8 id
52 minimum_ttl u8
53 maximum_ttl u8
54 fragment_identification u32 id
55 post_ip_class_of_service u8 id
56 source_mac_address mac id
57 post_destination_mac_address mac id
58 vlan_id u16 id
59 post_vlan_id u16 id
60 ip_version u8 id
61 flow_direction u8 id
62 ip_next_hop_ipv6_address ipv6
63 bgp_next_hop_ipv6_address ipv6
64 ipv6_extension_headers u32 flags
70 mpls_top_label_stack_section octets
71 mpls_label_stack_section2 octets
72 mpls_label_stack_section3 octets
73 mpls_label_stack_section4 octets
74 mpls_label_stack_section5 octets
75 mpls_label_stack_section6 octets
76 mpls_label_stack_section7 octets
77 mpls_label_stack_section8 octets
78 mpls_label_stack_section9 octets
79 mpls_label_stack_section10 octets
80 destination_mac_address mac id
81 post_source_mac_address mac id
82 interface_name str
83 interface_description str
84 sampler_name str
85 octet_total_count u64 total
86 packet_total_count u64 total
87 flags_and_sampler_id u32 id
88 fragment_offset u16
89 forwarding_status u32 id
90 mpls_vpn_route_distinguisher octets
91 mpls_top_label_prefix_length u8
92 src_traffic_index u32 id
93 dst_traffic_index u32 id
94 application_description str
95 application_id octets id
96 application_name str
98 post_ip_diff_serv_code_point u8 id
99 multicast_replication_factor u32 quantity
100 class_name str
101 classification_engine_id u8 id
102 layer2packet_section_offset u16
103 layer2packet_section_size u16
104 layer2packet_section_data octets
128 bgp_next_adjacent_as_number u32 id
129 bgp_prev_adjacent_as_number u32 id
130 exporter_ipv4_address ipv4 id
131 exporter_ipv6_address ipv6 id
132 dropped_octet_delta_count u64 delta
133 dropped_packet_delta_count u64 delta
134 dropped_octet_total_count u64 total
135 dropped_packet_total_count u64 total
136 flow_end_reason u8 id
137 common_properties_id u64 id
138 observation_point_id u64 id
139 icmp_type_code_ipv6 u16 id
140 mpls_top_label_ipv6_address ipv6
141 line_card_id u32 id
142 port_id u32 id
143 metering_process_id u32 id
144 exporting_process_id u32 id
145 template_id u16 id
146 wlan_channel_id u8 id
147 wlan_ssid str
148 flow_id u64 id
149 observation_domain_id u32 id
150 flow_start_seconds s
151 flow_end_seconds s
152 flow_start_milliseconds ms
153 flow_end_milliseconds ms
154 flow_start_microseconds us
155 flow_end_microseconds us
156 flow_start_nanoseconds ns
157 flow_end_nanoseconds ns
158 flow_start_delta_microseconds u32
159 flow_end_delta_microseconds u32
160 system_init_time_milliseconds ms
161 flow_duration_milliseconds u32
162 flow_duration_microseconds u32
163 observed_flow_total_count u64 total
164 ignored_packet_total_count u64 total
165 ignored_octet_total_count u64 total
166 not_sent_flow_total_count u64 total
167 not_sent_packet_total_count u64 total
168 not_sent_octet_total_count u64 total
169 destination_ipv6_prefix ipv6
170 source_ipv6_prefix ipv6
171 post_octet_total_count u64 total
172 post_packet_total_count u64 total
173 flow_key_indicator u64 flags
174 post_mcast_packet_total_count u64 total
175 post_mcast_octet_total_count u64 total
176 icmp_type_ipv4 u8 id
177 icmp_code_ipv4 u8 id
178 icmp_type_ipv6 u8 id
179 icmp_code_ipv6 u8 id
180 udp_source_port u16 id
181 udp_destination_port u16 id
182 tcp_source_port u16 id
183 tcp_destination_port u16 id
184 tcp_sequence_number u32
185 tcp_acknowledgement_number u32
186 tcp_window_size u16
187 tcp_urgent_pointer u16
188 tcp_header_length u8
189 ip_header_length u8
190 total_length_ipv4 u16
191 payload_length_ipv6 u16
192 ip_ttl u8
193 next_header_ipv6 u8
194 mpls_payload_length u32
195 ip_diff_serv_code_point u8 id
196 ip_precedence u8 id
197 fragment_flags u8 flags
198 octet_delta_sum_of_squares u64
199 octet_total_sum_of_squares u64
200 mpls_top_label_ttl u8
201 mpls_label_stack_length u32
202 mpls_label_stack_depth u32
203 mpls_top_label_exp u8 flags
204 ip_payload_length u32
205 udp_message_length u16
206 is_multicast u8 flags
207 ipv4_ihl u8
208 ipv4_options u32 flags
209 tcp_options u64 flags
210 padding_octets octets
211 collector_ipv4_address ipv4
212 collector_ipv6_address ipv6
213 export_interface u32 id
214 export_protocol_version u8 id
215 export_transport_protocol u8 id
216 collector_transport_port u16 id
217 exporter_transport_port u16 id
218 tcp_syn_total_count u64 total
219 tcp_fin_total_count u64 total
220 tcp_rst_total_count u64 total
221 tcp_psh_total_count u64 total
222 tcp_ack_total_count u64 total
223 tcp_urg_total_count u64 total
224 ip_total_length u64
225 post_nat_source_ipv4_address ipv4
226 post_nat_destination_ipv4_address ipv4
227 post_napt_source_transport_port u16 id
228 post_napt_destination_transport_port u16 id
229 nat_originating_address_realm u8 id
230 nat_event u8 id
231 initiator_octets u64 delta
232 responder_octets u64 delta
233 firewall_event u8 id
234 ingress_vrfid u32 id
235 egress_vrfid u32 id
236 vrf_name str
237 post_mpls_top_label_exp u8 flags
238 tcp_window_scale u16
239 biflow_direction u8 id
240 ethernet_header_length u8
241 ethernet_payload_length u16
242 ethernet_total_length u16
243 dot1q_vlan_id u16 id
244 dot1q_priority u8 id
245 dot1q_customer_vlan_id u16 id
246 dot1q_customer_priority u8 id
247 metro_evc_id str
248 metro_evc_type u8 id
249 pseudo_wire_id u32 id
250 pseudo_wire_type u16 id
251 pseudo_wire_control_word u32
252 ingress_physical_interface u32 id
253 egress_physical_interface u32 id
254 post_dot1q_vlan_id u16 id
255 post_dot1q_customer_vlan_id u16 id
256 ethernet_type u16 id
257 post_ip_precedence u8 id
258 collection_time_milliseconds ms
259 export_sctp_stream_id u16 id
260 max_export_seconds s
261 max_flow_end_seconds s
262 message_md5_checksum octets
263 message_scope u8 id
264 min_export_seconds s
265 min_flow_start_seconds s
266 opaque_octets octets
267 session_scope u8 id
268 max_flow_end_microseconds us
269 max_flow_end_milliseconds ms
270 max_flow_end_nanoseconds ns
271 min_flow_start_microseconds us
272 min_flow_start_milliseconds ms
273 min_flow_start_nanoseconds ns
274 collector_certificate octets
275 exporter_certificate octets
276 data_records_reliability bool
277 observation_point_type u8 id
278 new_connection_delta_count u32 delta
279 connection_sum_duration_seconds u64
280 connection_transaction_id u64 id
281 post_nat_source_ipv6_address ipv6
282 post_nat_destination_ipv6_address ipv6
283 nat_pool_id u32 id
284 nat_pool_name str
285 anonymization_flags u16 flags
286 anonymization_technique u16 id
287 information_element_index u16 id
288 p2p_technology str
289 tunnel_technology str
290 encrypted_technology str
291 basic_list octets
292 sub_template_list octets
293 sub_template_multi_list octets
294 bgp_validity_state u8 id
295 ipsec_spi u32 id
296 gre_key u32 id
297 nat_type u8 id
298 initiator_packets u64 delta
299 responder_packets u64 delta
300 observation_domain_name str
301 selection_sequence_id u64 id
302 selector_id u64 id
303 information_element_id u16 id
304 selector_algorithm u16 id
305 sampling_packet_interval u32 quantity
306 sampling_packet_space u32 quantity
307 sampling_time_interval u32 quantity
308 sampling_time_space u32 quantity
309 sampling_size u32 quantity
310 sampling_population u32 quantity
311 sampling_probability f64 quantity
312 data_link_frame_size u16
313 ip_header_packet_section octets
314 ip_payload_packet_section octets
315 data_link_frame_section octets
316 mpls_label_stack_section octets
317 mpls_payload_packet_section octets
318 selector_id_total_pkts_observed u64 total
319 selector_id_total_pkts_selected u64 total
320 absolute_error f64
321 relative_error f64
322 observation_time_seconds s
323 observation_time_milliseconds ms
324 observation_time_microseconds us
325 observation_time_nanoseconds ns
326 digest_hash_value u64
327 hash_ip_payload_offset u64
328 hash_ip_payload_size u64
329 hash_output_range_min u64
330 hash_output_range_max u64
331 hash_selected_range_min u64
332 hash_selected_range_max u64
333 hash_digest_output bool
334 hash_initialiser_value u64
335 selector_name str
336 upper_ci_limit f64
337 lower_ci_limit f64
338 confidence_level f64
339 information_element_data_type u8
340 information_element_description str
341 information_element_name str
342 information_element_range_begin u64
343 information_element_range_end u64
344 information_element_semantics u8
345 information_element_units u16
346 private_enterprise_number u32 id
347 virtual_station_interface_id octets
348 virtual_station_interface_name str
349 virtual_station_uuid octets
350 virtual_station_name str
351 layer2_segment_id u64 id
352 layer2_octet_delta_count u64 delta
353 layer2_octet_total_count u64 total
354 ingress_unicast_packet_total_count u64 total
355 ingress_multicast_packet_total_count u64 total
356 ingress_broadcast_packet_total_count u64 total
357 egress_unicast_packet_total_count u64 total
358 egress_broadcast_packet_total_count u64 total
359 monitoring_interval_start_milli_seconds ms
360 monitoring_interval_end_milli_seconds ms
361 port_range_start u16 id
362 port_range_end u16 id
363 port_range_step_size u16
364 port_range_num_ports u16
365 sta_mac_address mac id
366 sta_ipv4_address ipv4 id
367 wtp_mac_address mac id
368 ingress_interface_type u32 id
369 egress_interface_type u32 id
370 rtp_sequence_number u16
371 user_name str
372 application_category_name str
373 application_sub_category_name str
374 application_group_name str
375 original_flows_present u64 delta
376 original_flows_initiated u64 delta
377 original_flows_completed u64 delta
378 distinct_count_of_source_ip_address u64 total
379 distinct_count_of_destination_ip_address u64 total
380 distinct_count_of_source_ipv4_address u32 total
381 distinct_count_of_destination_ipv4_address u32 total
382 distinct_count_of_source_ipv6_address u64 total
383 distinct_count_of_destination_ipv6_address u64 total
384 value_distribution_method u8 id
385 rfc3550_jitter_milliseconds u32
386 rfc3550_jitter_microseconds u32
387 rfc3550_jitter_nanoseconds u32
388 dot1q_dei bool
389 dot1q_customer_dei bool
390 flow_selector_algorithm u16 id
391 flow_selected_octet_delta_count u64 delta
392 flow_selected_packet_delta_count u64 delta
393 flow_selected_flow_delta_count u64 delta
394 selector_id_total_flows_observed u64 total
395 selector_id_total_flows_selected u64 total
396 sampling_flow_interval u64 quantity
397 sampling_flow_spacing u64 quantity
398 flow_sampling_time_interval u64 quantity
399 flow_sampling_time_spacing u64 quantity
400 hash_flow_domain u16 id
401 transport_octet_delta_count u64 delta
402 transport_packet_delta_count u64 delta
403 original_exporter_ipv4_address ipv4 id
404 original_exporter_ipv6_address ipv6 id
405 original_observation_domain_id u32 id
406 intermediate_process_id u32 id
407 ignored_data_record_total_count u64 total
408 data_link_frame_type u16 flags
409 section_offset u16
410 section_exported_octets u16
411 dot1q_service_instance_tag octets
412 dot1q_service_instance_id u32 id
413 dot1q_service_instance_priority u8 id
414 dot1q_customer_source_mac_address mac id
415 dot1q_customer_destination_mac_address mac id
417 post_layer2_octet_delta_count u64 delta
418 post_mcast_layer2_octet_delta_count u64 delta
420 post_layer2_octet_total_count u64 total
421 post_mcast_layer2_octet_total_count u64 total
422 minimum_layer2_total_length u64
423 maximum_layer2_total_length u64
424 dropped_layer2_octet_delta_count u64 delta
425 dropped_layer2_octet_total_count u64 total
426 ignored_layer2_octet_total_count u64 total
427 not_sent_layer2_octet_total_count u64 total
428 layer2_octet_delta_sum_of_squares u64
429 layer2_octet_total_sum_of_squares u64
430 layer2_frame_delta_count u64 delta
431 layer2_frame_total_count u64 total
432 pseudo_wire_destination_ipv4_address ipv4
433 ignored_layer2_frame_total_count u64 total
434 mib_object_value_integer i32
435 mib_object_value_octet_string octets
436 mib_object_value_oid octets
437 mib_object_value_bits octets
438 mib_object_value_ip_address ipv4
439 mib_object_value_counter u64
440 mib_object_value_gauge u32
441 mib_object_value_time_ticks u32
442 mib_object_value_unsigned u32
443 mib_object_value_table octets
444 mib_object_value_row octets
445 mib_object_identifier octets
446 mib_sub_identifier u32
447 mib_index_indicator u64 flags
448 mib_capture_time_semantics u8
449 mib_context_engine_id octets
450 mib_context_name str
451 mib_object_name str
452 mib_object_description str
453 mib_object_syntax str
454 mib_module_name str
455 mobile_imsi str
456 mobile_msisdn str
457 http_status_code u16 id
458 source_transport_ports_limit u16
459 http_request_method str
460 http_request_host str
461 http_request_target str
462 http_message_version str
463 nat_instance_id u32 id
464 internal_address_realm octets
465 external_address_realm octets
466 nat_quota_exceeded_event u32 id
467 nat_threshold_event u32 id
468 http_user_agent str
469 http_content_type str
470 http_reason_phrase str
471 max_session_entries u32
472 max_bib_entries u32
473 max_entries_per_user u32
474 max_subscribers u32
475 max_fragments_pending_reassembly u32
476 address_pool_high_threshold u32
477 address_pool_low_threshold u32
478 address_port_mapping_high_threshold u32
479 address_port_mapping_low_threshold u32
480 address_port_mapping_per_user_high_threshold u32
481 global_address_mapping_high_threshold u32
482 vpn_identifier octets
483 bgp_community u32 id
484 bgp_source_community_list octets
485 bgp_destination_community_list octets
486 bgp_extended_community octets
487 bgp_source_extended_community_list octets
488 bgp_destination_extended_community_list octets
489 bgp_large_community octets
490 bgp_source_large_community_list octets
491 bgp_destination_large_community_list octets
"""

# ntop (PEN 35632); nProbe's v9 type is 57472 + id.
_NTOP_TEXT = """
80 src_fragments u16
81 dst_fragments u16
82 client_tcp_flags u8 flags
83 server_tcp_flags u8 flags
110 retransmitted_in_pkts u32 delta
111 retransmitted_out_pkts u32 delta
118 l7_proto u16 id
119 l7_proto_name str
"""


def _parse(text: str, pen: int) -> dict[int, IE]:
    table: dict[int, IE] = {}
    for line in text.strip().splitlines():
        parts = line.split()
        ie_id = int(parts[0])
        table[ie_id] = IE(pen, ie_id, parts[1], parts[2], parts[3] if len(parts) > 3 else "")
    return table


#: IANA elements by id.
IANA: dict[int, IE] = _parse(_IANA_TEXT, 0)
#: Enterprise elements by (pen, id).
ENTERPRISE: dict[tuple[int, int], IE] = {
    (PEN_NTOP, i): ie for i, ie in _parse(_NTOP_TEXT, PEN_NTOP).items()
}

#: Forward elements that have no reverse counterpart (RFC 5103 6.1: keys of
#: the flow and process-level properties).
_NOT_REVERSIBLE = frozenset(
    {4, 7, 8, 11, 12, 27, 28, 60, 137, 138, 141, 142, 143, 144, 145, 148, 149}
)


def lookup(pen: int, ie_id: int) -> IE | None:
    """The element for an enterprise number and id, or None when unknown."""
    if pen == 0:
        return IANA.get(ie_id)
    if pen == PEN_REVERSE:
        fwd = IANA.get(ie_id)
        if fwd is None or ie_id in _NOT_REVERSIBLE:
            return None
        return IE(PEN_REVERSE, ie_id, "reverse_" + fwd.name, fwd.type, fwd.semantics)
    return ENTERPRISE.get((pen, ie_id))


def v9_field_key(field_type: int) -> tuple[int, int]:
    """NetFlow v9 field type -> (pen, id); nProbe types become ntop elements."""
    if NTOP_V9_BASE < field_type < NTOP_V9_BASE + 1024:
        return PEN_NTOP, field_type - NTOP_V9_BASE
    return 0, field_type


def extra_name(pen: int, ie_id: int) -> str:
    """Column name of an element kept as raw bytes: ``ie_<pen>_<id>``."""
    return f"ie_{pen}_{ie_id}"


_INT_TYPES = {"u8", "u16", "u32", "u64", "s", "ms", "us", "ns", "bool", "ipv4"}


def field_dtype(ie: IE | None, length: int) -> np.dtype:
    """Big-endian numpy dtype of one fixed-length field as exported.

    Unsigned integers (and dateTime, bool, IPv4) of 1, 2, 4 or 8 bytes read as
    ``>u{n}`` whatever their nominal size (reduced-size encoding); other
    lengths and every other type are raw bytes (``V{n}``) for
    :func:`as_uint64` or byte-wise use.
    """
    if ie is not None:
        if ie.type in _INT_TYPES and length in (1, 2, 4, 8):
            return np.dtype(f">u{length}")
        if ie.type in ("i8", "i16", "i32", "i64") and length in (1, 2, 4, 8):
            return np.dtype(f">i{length}")
        if ie.type == "f32" and length == 4:
            return np.dtype(">f4")
        if ie.type == "f64" and length in (4, 8):
            return np.dtype(f">f{length}")
    return np.dtype(f"V{length}")


def as_uint64(col: np.ndarray) -> np.ndarray:
    """A column of big-endian unsigned integers of any width -> uint64."""
    if col.dtype.kind == "u" or col.dtype.kind == "i":
        return col.astype(np.uint64)
    width = col.dtype.itemsize
    raw = np.ascontiguousarray(col).view(np.uint8).reshape(-1, width)
    if width >= 8:
        raw = raw[:, width - 8 :]
        return np.ascontiguousarray(raw).view(">u8").reshape(-1).astype(np.uint64)
    padded = np.zeros((len(col), 8), dtype=np.uint8)
    padded[:, 8 - width :] = raw
    return padded.view(">u8").reshape(-1).astype(np.uint64)
