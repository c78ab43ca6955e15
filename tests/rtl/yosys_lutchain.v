`default_nettype none
// N LUT6 primitives in series between registers: a register-to-register path of exactly N LUT
// levels, whatever ABC would have done with inferred logic (instantiated LUTs are kept as they
// are). Each LUT is a 6-input XOR of the previous LUT and five register bits.
module yosys_lutchain #(parameter integer N = 5) (
    input  wire         clk,
    input  wire [5*N:0] d,
    output reg          q
);
    reg [5*N:0] r;
    wire [N:0] c;
    assign c[0] = r[0];
    genvar k;
    generate
        for (k = 0; k < N; k = k + 1) begin : g
            LUT6 #(.INIT(64'h6996966996696996)) lut (
                .O(c[k+1]), .I0(c[k]), .I1(r[5*k+1]), .I2(r[5*k+2]), .I3(r[5*k+3]),
                .I4(r[5*k+4]), .I5(r[5*k+5]));
        end
    endgenerate
    always @(posedge clk) begin
        r <= d;
        q <= c[N];
    end
endmodule
`default_nettype wire
